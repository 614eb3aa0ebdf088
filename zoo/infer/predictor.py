"""Prediction on images: :class:`Predictor` turns uint8 RGB images into class-index masks.

A predictor wraps a model (a :class:`~zoo.models.SegmentationModel`, an ONNX Runtime session or the fast path)
that maps RGB images in 0..1 to logits, with DeepLab's test-time options (scales, flip, sliding window).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.checkpoint import load_model, read_checkpoint
from zoo.data.io import to_rgb_uint8
from zoo.infer.onnx import OnnxModel
from zoo.infer.optimize import PRECISION_NAMES, optimize_for_inference
from zoo.infer.quantize import Calibration, check_cpu_precision, image_files
from zoo.infer.tta import DEEPLAB_TF_EVAL_CROP, Slide, infer_logits, pad_to_size


class Predictor:
    """Runs a segmentation model on uint8 RGB images and returns class-index masks.

    Args:
        model: a :class:`~zoo.models.SegmentationModel` or any callable mapping ``N×3×H×W`` RGB tensors in 0..1
            to logits ``N×C×H×W`` (e.g. :class:`zoo.infer.onnx.OnnxModel`).
        num_classes: number of classes the model predicts.
        class_names: optional class names.
        palette: optional colour per class.
        device: where the input tensors go ("cpu", "cuda").
        scales: test-time scales (see :func:`zoo.inference.infer_logits`).
        flip: average with the mirrored image.
        slide: ``((crop_h, crop_w), (stride_h, stride_w))`` sliding-window inference, or None.
        batch_size: most images or windows per model call (None: all at once).
        pad_to: ``(height, width)``: pad each image at the bottom and right to at least that size with
            ``pad_value`` before everything else, and crop the logits back (DeepLab's evaluation protocol); None
            runs the image as it is.
        pad_value: RGB fill colour of the padding, 0..1 scale (default: the model's ``mean``, which normalises
            to zero, as DeepLab pads with its mean pixel).
    """

    def __init__(
        self,
        model: Callable[[torch.Tensor], Any],
        *,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        palette: Sequence[Sequence[int]] | None = None,
        device: str | torch.device = "cpu",
        scales: Sequence[float] = (1.0,),
        flip: bool = False,
        slide: Slide | None = None,
        batch_size: int | None = None,
        pad_to: tuple[int, int] | None = None,
        pad_value: Sequence[float] | None = None,
    ) -> None:
        self.model = model
        self.num_classes = int(num_classes)
        self.device = torch.device(device)
        self.class_names = list(class_names) if class_names is not None else None
        self.palette = [tuple(int(v) for v in c) for c in palette] if palette is not None else None
        self.scales = tuple(float(s) for s in scales)
        self.flip = bool(flip)
        self.slide = slide
        self.batch_size = batch_size
        self.pad_to = None if pad_to is None else (int(pad_to[0]), int(pad_to[1]))
        if self.pad_to is not None and min(self.pad_to) < 1:
            raise ValueError(f"pad_to must be two positive sizes, got {pad_to!r}")
        pad_value = pad_value if pad_value is not None else getattr(model, "mean", None)
        if self.pad_to is not None and pad_value is None:
            raise ValueError("pad_to needs pad_value: the model has no mean colour to pad with")
        self.pad_value = None if pad_value is None else tuple(float(v) for v in pad_value)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path | None,
        device: str | torch.device = "cpu",
        *,
        backend: str = "torch",
        onnx: str | Path | None = None,
        fast: bool = False,
        precision: str = "fp32",
        calibration: Calibration | None = None,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        encoder: str | None = None,
        pad_to: tuple[int, int] | str | None = None,
        **options: Any,
    ) -> Predictor:
        """A predictor for a ``zoo.save_model`` file or a training (Lightning) checkpoint.

        Args:
            path: the checkpoint (may be None with ``backend="onnx"`` when the ONNX file holds the description).
            device: "cpu" or "cuda".
            backend: "torch", or "onnx" to run ``onnx`` (a file from ``zoo export``) with ONNX Runtime.
            onnx: the ONNX file for ``backend="onnx"``.
            fast: run the model through :func:`zoo.optimize_for_inference` (torch backend).
            precision: the fast path's precision: "fp32", "bf16", "fp16" or "int8" (CPU, with ``calibration``).
            calibration: int8: a folder of images like the data, or an iterable of batches of RGB in 0..1.
            num_classes: the number of classes expected; a checkpoint with another number is an error.
            class_names: the class names expected; a checkpoint with other names is an error.
            encoder: the encoder name expected; a checkpoint built on another encoder is an error.
            pad_to: ``(height, width)`` to pad every image to (see :class:`Predictor`; the fill colour is the
                checkpoint's ``mean``), or a dataset name for DeepLab's evaluation protocol there: a converted TF
                DeepLab model (``semantics="deeplab-tf"``) is padded to TF DeepLab's eval crop of that dataset
                (:func:`deeplab_eval_crop`), any other model not at all.
            **options: ``scales``, ``flip``, ``slide``, ``batch_size`` (see :class:`Predictor`).

        Raises:
            FileNotFoundError: a missing file.
            ValueError: the checkpoint does not fit the expectations or its weights do not load.
        """
        device = torch.device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda: CUDA is not available on this machine")
        if backend not in ("torch", "onnx"):
            raise ValueError(f"backend must be 'torch' or 'onnx', got {backend!r}")
        if backend == "onnx":
            if onnx is None:
                raise ValueError("--backend onnx needs --onnx FILE")
            model: Any = OnnxModel(onnx, device=str(device))
            meta = read_checkpoint(path)["zoo"] if path is not None else model.meta
            if meta is None:
                raise ValueError(f"{onnx} holds no zoo model description: pass --checkpoint too")
            source = path if path is not None else onnx
        else:
            if path is None:
                raise ValueError("a checkpoint is needed (--checkpoint)")
            meta = read_checkpoint(path)["zoo"]
            source = path
        _check_expected(meta, source, num_classes, class_names, encoder)
        _check_precision(precision, calibration, fast and backend == "torch", device)
        if backend == "torch":
            model = load_model(path, map_location=device)
            if fast:
                model = _LazyOptimized(model, precision=precision, calibration=calibration)
        if isinstance(pad_to, str):
            pad_to = deeplab_eval_crop(meta["build_args"], pad_to)
        return cls(
            model,
            num_classes=int(meta["build_args"]["num_classes"]),
            class_names=meta.get("class_names"),
            palette=meta.get("palette"),
            device=device,
            pad_to=pad_to,
            pad_value=meta["build_args"].get("mean"),
            **options,
        )

    def _tensor(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        batch = np.stack([to_rgb_uint8(image) for image in images])
        return torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).float().div_(255)

    def logits(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Averaged logits ``N×C×H×W`` of images of one size (``H×W×3`` uint8 RGB)."""
        x = self._tensor(images)
        height, width = x.shape[-2:]
        if self.pad_to is not None:
            x = pad_to_size(x, self.pad_to, self.pad_value)
        logits = infer_logits(
            self.model, x, scales=self.scales, flip=self.flip, slide=self.slide, batch_size=self.batch_size
        )
        return logits[..., :height, :width]

    def predict(self, image: np.ndarray) -> np.ndarray:
        """The ``H×W`` class-index mask (uint8, or int32 above 256 classes) of an ``H×W×3`` uint8 RGB image."""
        return self.predict_batch([image])[0]

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Masks of several images; images of the same size run as one batch.

        Args:
            images: ``H×W×3`` uint8 RGB arrays (gray, RGBA and 16-bit are converted).
        """
        images = [to_rgb_uint8(image) for image in images]
        masks: list[np.ndarray | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        for index, image in enumerate(images):
            groups.setdefault(image.shape[:2], []).append(index)
        dtype = np.uint8 if self.num_classes <= 256 else np.int32
        for indices in groups.values():
            predicted = self.logits([images[i] for i in indices]).argmax(1).cpu().numpy().astype(dtype)
            for i, mask in zip(indices, predicted, strict=True):
                masks[i] = mask
        return masks  # type: ignore[return-value]


class _LazyOptimized:
    """Calls :func:`zoo.optimize_for_inference` on the first input it sees, then runs the optimised model.

    Args:
        model: the model.
        precision: the fast path's precision.
        calibration: int8 calibration data.
    """

    def __init__(self, model: torch.nn.Module, *, precision: str = "fp32", calibration: Calibration | None = None):
        self.model = model
        self.precision = precision
        self.calibration = calibration
        self.optimized: Callable | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.optimized is None:
            self.optimized = optimize_for_inference(
                self.model, example_input=x, precision=self.precision, calibration=self.calibration
            )
        return self.optimized(x)


def deeplab_eval_crop(build_args: dict[str, Any], dataset: str) -> tuple[int, int] | None:
    """The size DeepLab's evaluation pads every image of ``dataset`` to, for a model with ``build_args``.

    TF DeepLab's eval pads each image at the bottom and right to its eval crop (513x513 for VOC, 1025x2049 for
    Cityscapes) with the mean pixel, and the mask with the ignore label; with ``align_corners=True`` resizes the
    padding changes the logits of the image itself, so a converted model (``semantics="deeplab-tf"``) reproduces
    the published numbers only padded the same way. Other models and other datasets: None (no padding).
    """
    if build_args.get("semantics") != "deeplab-tf":
        return None
    return DEEPLAB_TF_EVAL_CROP.get(dataset)


def _check_precision(precision: str, calibration: Calibration | None, fast: bool, device: torch.device) -> None:
    """Raise before any work for a precision that cannot run: no fast path, no calibration data, no CPU support."""
    if precision not in PRECISION_NAMES:
        raise ValueError(f"precision must be one of {PRECISION_NAMES}, got {precision!r}")
    if precision == "fp32":
        return
    if not fast:
        raise ValueError(f"--precision {precision} runs on the fast path: add --fast (with the torch backend)")
    if precision == "int8" and calibration is None:
        raise ValueError("--precision int8 needs --calibration DIR: a folder of images like the data")
    if isinstance(calibration, (str, Path)):
        image_files(calibration)
    if device.type == "cpu":
        check_cpu_precision(precision)


def _check_expected(
    meta: dict[str, Any],
    source: str | Path,
    num_classes: int | None,
    class_names: Sequence[str] | None,
    encoder: str | None,
) -> None:
    """Raise a ValueError naming what was expected and what the checkpoint holds."""
    args = meta["build_args"]
    found_classes = int(args["num_classes"])
    names = meta.get("class_names")
    if num_classes is not None and num_classes != found_classes:
        raise ValueError(f"{source} predicts {found_classes} classes, expected {num_classes} (--num-classes)")
    if class_names is not None:
        expected = [str(c) for c in class_names]
        if len(expected) != found_classes:
            raise ValueError(
                f"{source} predicts {found_classes} classes, expected {len(expected)} (--classes {','.join(expected)})"
            )
        if names is not None and list(names) != expected:
            raise ValueError(f"{source} has classes {list(names)}, expected {expected} (--classes)")
    if encoder is not None and args["encoder"] != encoder:
        raise ValueError(f"{source} was built on encoder {args['encoder']!r}, expected {encoder!r} (--encoder)")


__all__ = ["Predictor", "deeplab_eval_crop"]
