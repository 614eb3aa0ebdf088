"""Inference: test-time augmentation, the Predictor, evaluation, ONNX export, the fast path and int8."""

from zoo.infer.accuracy import QuantizationReport, quantization_report
from zoo.infer.optimize import OptimizedModel, optimize_for_inference
from zoo.infer.predictor import Predictor
from zoo.infer.tta import DEEPLAB_SCALES, infer_logits

__all__ = [
    "DEEPLAB_SCALES",
    "OptimizedModel",
    "Predictor",
    "QuantizationReport",
    "infer_logits",
    "optimize_for_inference",
    "quantization_report",
]
