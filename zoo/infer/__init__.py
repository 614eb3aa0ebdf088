"""Inference: test-time augmentation, the Predictor, evaluation, ONNX export and the fast path."""

from zoo.infer.optimize import OptimizedModel, optimize_for_inference
from zoo.infer.predictor import Predictor
from zoo.infer.tta import DEEPLAB_SCALES, infer_logits

__all__ = ["DEEPLAB_SCALES", "OptimizedModel", "Predictor", "infer_logits", "optimize_for_inference"]
