"""Converting other frameworks' checkpoints into zoo models (TensorFlow is imported only while converting)."""

from zoo.convert.deeplab_tf import convert_deeplab_tf
from zoo.convert.pretrained import list_pretrained

__all__ = ["convert_deeplab_tf", "list_pretrained"]
