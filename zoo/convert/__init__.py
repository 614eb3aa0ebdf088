"""Converting other frameworks' checkpoints into zoo models: TF DeepLab checkpoints and its TFLite exports
(TensorFlow and the ``tflite`` parser are imported only while converting).

Importing this package registers TF DeepLab's published models as the weight source ``"deeplab-tf"``, so
``zoo.build_model(weights="deeplab-tf:NAME")`` and ``encoder_weights="deeplab-tf:NAME"`` find them.
"""

from zoo.convert.deeplab_tf import convert_deeplab_tf
from zoo.convert.pretrained import DeepLabTF, list_pretrained
from zoo.convert.tflite import convert_deeplab_tflite
from zoo.registry import WEIGHT_SOURCES

WEIGHT_SOURCES.register("deeplab-tf")(DeepLabTF())

__all__ = ["convert_deeplab_tf", "convert_deeplab_tflite", "list_pretrained"]
