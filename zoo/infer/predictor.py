"""Prediction on images: :class:`Predictor` turns RGB images into class-index masks.

A predictor is composed, as Detectron2's ``DefaultPredictor`` is: a model (a :class:`~zoo.models.SegmentationModel`,
its fast path, an ONNX Runtime session: any callable from RGB batches in 0..1 to logits) and the test-time options
(scales, flip, sliding window, padding). ``from_checkpoint`` and ``from_onnx`` build the model from a file and hand
it in; everything else is the caller's to compose. Images larger than ``max_pixels`` run in tiles by themselves,
so memory stays bounded whatever the photograph's size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.checkpoint import load_checkpoint
from zoo.data.io import image_files, to_rgb_uint8
from zoo.errors import ArgumentError
from zoo.infer.device import resolve_device
from zoo.infer.onnx import OnnxModel
from zoo.infer.optimize import optimize_for_inference
from zoo.infer.precision import check_precision
from zoo.infer.quantize import Calibration
from zoo.infer.tta import DEEPLAB_TF_EVAL_CROP, Slide, infer_logits, pad_to_size

MAX_PIXELS = 2048 * 2048
TILE = 1024
TILE_MARGIN = 128


class Predictor:
    """Runs a segmentation model on RGB images and returns class-index masks.

    Args:
        model: a :class:`~zoo.models.SegmentationModel` or any callable mapping ``N×3×H×W`` RGB tensors in 0..1
            to logits ``N×C×H×W`` (e.g. :class:`zoo.infer.onnx.OnnxModel`, :func:`zoo.optimize_for_inference`'s).
        num_classes: number of classes the model predicts.
        class_names: optional class names.
        palette: optional colour per class.
        device: where the input tensors go ("cpu", "cuda").
        scales: test-time scales (see :func:`zoo.infer.tta.infer_logits`).
        flip: average with the mirrored image.
        slide: ``((crop_h, crop_w), (stride_h, stride_w))`` sliding-window inference, or None.
        batch_size: most images or windows per model call (None: all at once).
        pad_to: ``(height, width)``: pad each image at the bottom and right to at least that size with
            ``pad_value`` before everything else, and crop the logits back (DeepLab's evaluation protocol); None
            runs the image as it is.
        pad_value: RGB fill colour of the padding, 0..1 scale (default: the model's ``mean``, which normalises
            to zero, as DeepLab pads with its mean pixel).
        max_pixels: an image with more pixels (and no ``slide``/``pad_to``) runs in ``tile``-pixel tiles that
            overlap by ``tile_margin`` on each side, each tile's centre kept: memory stays that of one tile. None:
            never tile.
        tile: the side of a tile.
        tile_margin: the context each tile sees beyond the part of it that is kept.
        meta: the model's description (``checkpoint["zoo"]``), kept for the caller.
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
        max_pixels: int | None = MAX_PIXELS,
        tile: int = TILE,
        tile_margin: int = TILE_MARGIN,
        meta: dict[str, Any] | None = None,
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
            raise ArgumentError("pad_to", f"must be two positive sizes, got {pad_to!r}")
        pad_value = pad_value if pad_value is not None else getattr(model, "mean", None)
        if self.pad_to is not None and pad_value is None:
            raise ArgumentError("pad_value", "needed with pad_to: the model has no mean colour to pad with")
        self.pad_value = None if pad_value is None else tuple(float(v) for v in pad_value)
        if tile < 1 or tile_margin < 0:
            raise ArgumentError("tile", f"needs tile >= 1 and tile_margin >= 0, got {tile} and {tile_margin}")
        self.max_pixels, self.tile, self.tile_margin = max_pixels, int(tile), int(tile_margin)
        self.meta = meta

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        *,
        fast: bool = False,
        precision: str = "fp32",
        calibration: Calibration | None = None,
        backend: str = "auto",
        pad_to: tuple[int, int] | str | None = None,
        **options: Any,
    ) -> Predictor:
        """A predictor for a ``zoo.save_model`` file or a training (Lightning) checkpoint, read once.

        Args:
            path: the checkpoint.
            device: "cpu", "cuda" or "cuda:N".
            fast: run the model through :func:`zoo.optimize_for_inference` (built on the first image).
            precision: "fp32", "bf16", "fp16" or "int8"; any but fp32 runs on the fast path (implies ``fast``);
                int8 runs on the CPU with ``calibration`` (:func:`zoo.infer.precision.check_precision`).
            calibration: int8: a folder of images like the data, or an iterable of batches of RGB in 0..1.
            backend: the fast path's engine (``optimize_for_inference``'s ``backend``: "auto", "openvino", ...).
            pad_to: ``(height, width)`` to pad every image to, or a dataset name for DeepLab's evaluation
                protocol there (see :meth:`with_meta`).
            **options: the other arguments of :class:`Predictor` (``scales``, ``flip``, ``slide``, ...).

        Raises:
            FileNotFoundError: a missing file.
            ArgumentError: a device, precision or calibration that cannot run here (before the file is read).
            ValueError: a file that is not a zoo checkpoint, or weights that do not load.
        """
        device = resolve_device(device)
        check_precision(precision, device=device, backend=backend, calibration=calibration)
        model, meta = load_checkpoint(path, map_location=device)
        if fast or precision != "fp32" or backend != "auto":
            model = LazyOptimized(model, precision=precision, calibration=calibration, backend=backend)
        return cls.with_meta(model, meta, device=device, pad_to=pad_to, **options)

    @classmethod
    def from_onnx(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        *,
        meta: dict[str, Any] | None = None,
        pad_to: tuple[int, int] | str | None = None,
        **options: Any,
    ) -> Predictor:
        """A predictor that runs an ONNX file (``zoo export``'s, fp32 or int8) with ONNX Runtime.

        Args:
            path: the ``.onnx`` file.
            device: "cpu", or "cuda" with onnxruntime's CUDA execution provider.
            meta: the model description (``checkpoint["zoo"]``); default: the one stored in the file.
            pad_to: see :meth:`with_meta`.
            **options: the other arguments of :class:`Predictor`.
        """
        device = resolve_device(device)
        model = OnnxModel(path, device=str(device))
        meta = meta if meta is not None else model.meta
        if meta is None:
            raise ArgumentError("meta", f"{path} holds no zoo model description: give its checkpoint's ('zoo' key)")
        return cls.with_meta(model, meta, device=device, pad_to=pad_to, **options)

    @classmethod
    def with_meta(
        cls, model: Callable, meta: dict[str, Any], *, pad_to: tuple[int, int] | str | None = None, **options: Any
    ) -> Predictor:
        """A predictor for ``model`` with the classes, palette and mean colour of its description ``meta``.

        Args:
            model: the model (any callable from RGB batches in 0..1 to logits).
            meta: ``checkpoint["zoo"]`` (:func:`zoo.checkpoint.model_meta`).
            pad_to: ``(height, width)``, or a dataset name: a converted TF DeepLab model (``semantics="deeplab-tf"``)
                is padded to TF DeepLab's eval crop of that dataset (:func:`deeplab_eval_crop`), any other model
                not at all.
            **options: the other arguments of :class:`Predictor`.
        """
        args = meta["build_args"]
        if isinstance(pad_to, str):
            pad_to = deeplab_eval_crop(args, pad_to)
        return cls(
            model,
            num_classes=int(args["num_classes"]),
            class_names=meta.get("class_names"),
            palette=meta.get("palette"),
            pad_to=pad_to,
            pad_value=args.get("mean"),
            meta=meta,
            **options,
        )

    def _tensor(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        batch = np.stack(images)
        return torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).float().div_(255)

    def logits(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Averaged logits ``N×C×H×W`` of images of one size (``H×W×3`` uint8 RGB), never tiled."""
        x = self._tensor([to_rgb_uint8(image, "images") for image in images])
        height, width = x.shape[-2:]
        if self.pad_to is not None:
            x = pad_to_size(x, self.pad_to, self.pad_value)
        logits = infer_logits(
            self.model, x, scales=self.scales, flip=self.flip, slide=self.slide, batch_size=self.batch_size
        )
        return logits[..., :height, :width]

    def predict(self, image: np.ndarray) -> np.ndarray:
        """The ``H×W`` class-index mask (uint8, or int32 above 256 classes) of an image.

        Args:
            image: ``H×W×3`` RGB, uint8 (0..255) or float (0..1); gray, RGBA and 16-bit are converted. A float
                image in 0..255 is refused (divide it by 255), never clipped.
        """
        return self._predict([to_rgb_uint8(image, "image")])[0]

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Masks of several images (see :meth:`predict`); images of the same size run as one batch."""
        return self._predict([to_rgb_uint8(image, "images") for image in images])

    def _predict(self, images: list[np.ndarray]) -> list[np.ndarray]:
        masks: list[np.ndarray | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        for index, image in enumerate(images):
            groups.setdefault(image.shape[:2], []).append(index)
        for (height, width), indices in groups.items():
            if self._tiled(height, width):
                for i in indices:
                    masks[i] = self._predict_tiled(images[i])
                continue
            predicted = self._argmax(self.logits([images[i] for i in indices]))
            for i, mask in zip(indices, predicted, strict=True):
                masks[i] = mask
        return masks  # type: ignore[return-value]

    def _argmax(self, logits: torch.Tensor) -> np.ndarray:
        return class_map(logits).astype(np.uint8 if self.num_classes <= 256 else np.int32, copy=False)

    def _tiled(self, height: int, width: int) -> bool:
        no_layout = self.slide is None and self.pad_to is None
        return no_layout and self.max_pixels is not None and height * width > self.max_pixels

    def _predict_tiled(self, image: np.ndarray) -> np.ndarray:
        """The mask of a large image, tile by tile: each tile runs with its margin, its centre is kept."""
        height, width = image.shape[:2]
        mask = np.zeros((height, width), np.uint8 if self.num_classes <= 256 else np.int32)
        for (top, bottom, left, right), (y0, y1, x0, x1) in tiles(height, width, self.tile, self.tile_margin):
            logits = self.logits([image[y0:y1, x0:x1]])
            mask[top:bottom, left:right] = self._argmax(logits[..., top - y0 : bottom - y0, left - x0 : right - x0])[0]
        return mask


def class_map(logits: torch.Tensor) -> np.ndarray:
    """The class of each pixel (argmax over dim 1; the first of equal maxima, as torch's). On the CPU numpy's argmax,
    which reduces over the strided class axis 5x faster than ``torch.argmax(logits, 1)`` (21×512×512 logits at one
    thread, Ice Lake Xeon: 19 ms against 100 ms, BENCHMARKS.md "Where the time goes")."""
    if logits.device.type == "cpu":
        return np.argmax(logits.detach().float().numpy(), axis=1)
    return logits.argmax(1).cpu().numpy()


def tiles(height: int, width: int, tile: int, margin: int) -> Iterator[tuple[tuple[int, ...], tuple[int, ...]]]:
    """``(kept box, read box)`` pairs, each ``(top, bottom, left, right)``, that cover an image in tiles.

    The kept boxes partition the image into ``tile``×``tile`` blocks; each read box is its kept box grown by
    ``margin`` on every side (within the image), so every kept pixel sees at least ``margin`` pixels of context.
    """
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            bottom, right = min(top + tile, height), min(left + tile, width)
            read = (
                max(top - margin, 0),
                min(bottom + margin, height),
                max(left - margin, 0),
                min(right + margin, width),
            )
            yield (top, bottom, left, right), read


class LazyOptimized:
    """Calls :func:`zoo.optimize_for_inference` on the first input it sees, then runs the optimised model.

    Args:
        model: the model.
        precision: the fast path's precision.
        calibration: int8 calibration data.
    """

    def __init__(
        self, model: torch.nn.Module, *, precision: str = "fp32", calibration: Calibration | None = None, backend="auto"
    ):
        self.backend = backend
        if isinstance(calibration, (str, Path)):
            image_files(calibration, what="calibration folder")  # no images: an error now, not at the first image
        self.model = model
        self.precision = precision
        self.calibration = calibration
        self.optimized: Callable | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.optimized is None:
            self.optimized = optimize_for_inference(
                self.model, x, self.backend, precision=self.precision, calibration=self.calibration
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


def check_expected(
    predictor: Predictor,
    source: str | Path,
    *,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    encoder: str | None = None,
) -> None:
    """Raise an :class:`~zoo.errors.ArgumentError` naming what was expected and what ``source``'s model holds.

    Args:
        predictor: the predictor built from ``source``.
        source: the file, for the message.
        num_classes: the number of classes expected.
        class_names: the class names expected.
        encoder: the encoder name expected.
    """
    found, names = predictor.num_classes, predictor.class_names
    if num_classes is not None and num_classes != found:
        raise ArgumentError("num_classes", f"{source} predicts {found} classes, expected {num_classes}")
    if class_names is not None:
        expected = [str(c) for c in class_names]
        if len(expected) != found:
            raise ArgumentError(
                "class_names", f"{source} predicts {found} classes, expected {len(expected)}: {expected}"
            )
        if names is not None and list(names) != expected:
            raise ArgumentError("class_names", f"{source} has classes {list(names)}, expected {expected}")
    built_on = (predictor.meta or {}).get("build_args", {}).get("encoder")
    if encoder is not None and built_on != encoder:
        raise ArgumentError("encoder", f"{source} was built on encoder {built_on!r}, expected {encoder!r}")


__all__ = ["LazyOptimized", "Predictor", "check_expected", "class_map", "deeplab_eval_crop", "tiles"]
