"""zoo: semantic segmentation built around DeepLab's aligned Xception.

Importing the package registers every encoder, decoder and dataset (and the zoo's Xceptions in smp's
encoder table), so nothing depends on import order.
"""

from zoo.datasets import build_dataset, list_datasets
from zoo.decoders import list_decoders
from zoo.encoders import build_encoder, list_encoders
from zoo.models import SegmentationModel, build_model, load_model, save_model
from zoo.optimize import optimize_for_inference
from zoo.predict import Predictor

__version__ = "0.1.0"

__all__ = [
    "Predictor",
    "SegmentationModel",
    "build_dataset",
    "build_encoder",
    "build_model",
    "list_datasets",
    "list_decoders",
    "list_encoders",
    "load_model",
    "optimize_for_inference",
    "save_model",
]
