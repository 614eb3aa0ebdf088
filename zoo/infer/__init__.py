"""Inference: test-time augmentation, the Predictor, evaluation, ONNX export, the fast path and int8.

The names below load their module on first use (PEP 562), so light modules of the package
(:mod:`zoo.infer.precision`) import without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "DEEPLAB_SCALES": "zoo.infer.tta",
    "OptimizedModel": "zoo.infer.optimize",
    "Predictor": "zoo.infer.predictor",
    "QuantizationReport": "zoo.infer.accuracy",
    "infer_logits": "zoo.infer.tta",
    "optimize_for_inference": "zoo.infer.optimize",
    "quantization_report": "zoo.infer.accuracy",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'zoo.infer' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = list(_LAZY)
