"""zoo: semantic segmentation built around DeepLab's aligned Xception.

The names below load their module on first use (PEP 562), so ``import zoo`` and ``zoo --help`` stay quick and
import neither torch's model zoo nor smp or timm. Each registry is complete whenever it is used: the package that
owns it (``zoo.encoders``, ``zoo.decoders``, ``zoo.data``) registers every entry when it is imported, and importing
``zoo.encoders`` also adds the zoo's encoders to smp's table (``zoo-xception65``, ...).
"""

from __future__ import annotations

import importlib
from typing import Any

from zoo.version import __version__

_LAZY = {
    "Predictor": "zoo.infer",
    "SegmentationModel": "zoo.models",
    "build_dataset": "zoo.data",
    "build_encoder": "zoo.encoders",
    "build_model": "zoo.models",
    "convert_deeplab_tf": "zoo.convert",
    "convert_deeplab_tflite": "zoo.convert",
    "list_datasets": "zoo.data",
    "list_decoders": "zoo.decoders",
    "list_encoders": "zoo.encoders",
    "list_pretrained": "zoo.convert",
    "load_model": "zoo.checkpoint",
    "optimize_for_inference": "zoo.infer",
    "quantization_report": "zoo.infer",
    "save_model": "zoo.checkpoint",
}


def __getattr__(name: str) -> Any:
    if name == "from_pretrained":
        return __getattr__("SegmentationModel").from_pretrained
    if name not in _LAZY:
        raise AttributeError(f"module 'zoo' has no attribute {name!r}")
    importlib.import_module("zoo.convert")  # registers the published weights (deeplab-tf:NAME) before any build
    return getattr(importlib.import_module(_LAZY[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY, "from_pretrained"])


__all__ = ["__version__", "from_pretrained", *_LAZY]
