"""zoo: semantic segmentation built around DeepLab's aligned Xception.

Importing the package registers every encoder, decoder and dataset (and the zoo's Xceptions in smp's
encoder table), so nothing depends on import order.
"""

from zoo.checkpoint import load_model, save_model
from zoo.data import build_dataset, list_datasets
from zoo.decoders import list_decoders
from zoo.encoders import build_encoder, list_encoders
from zoo.infer import Predictor, optimize_for_inference, quantization_report
from zoo.models import SegmentationModel, build_model
from zoo.version import __version__

__all__ = [
    "Predictor",
    "SegmentationModel",
    "__version__",
    "build_dataset",
    "build_encoder",
    "build_model",
    "list_datasets",
    "list_decoders",
    "list_encoders",
    "load_model",
    "optimize_for_inference",
    "quantization_report",
    "save_model",
]
