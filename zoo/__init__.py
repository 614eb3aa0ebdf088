"""zoo: semantic segmentation built around DeepLab's aligned Xception.

Importing the package registers every encoder, decoder and dataset (and the zoo's Xceptions in smp's
encoder table), so nothing depends on import order.
"""

from zoo.checkpoint import load_model, save_model
from zoo.convert import convert_deeplab_tf, list_pretrained
from zoo.data import build_dataset, list_datasets
from zoo.decoders import list_decoders
from zoo.encoders import build_encoder, list_encoders
from zoo.infer import Predictor, optimize_for_inference
from zoo.models import SegmentationModel, build_model
from zoo.version import __version__

from_pretrained = SegmentationModel.from_pretrained

__all__ = [
    "Predictor",
    "SegmentationModel",
    "__version__",
    "build_dataset",
    "build_encoder",
    "build_model",
    "convert_deeplab_tf",
    "from_pretrained",
    "list_datasets",
    "list_decoders",
    "list_encoders",
    "list_pretrained",
    "load_model",
    "optimize_for_inference",
    "save_model",
]
