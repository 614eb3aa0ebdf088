"""Prediction on images: :class:`Predictor` (Python API) and the ``zoo predict`` command.

``zoo predict --checkpoint CKPT --input FILE|DIR|GLOB --output DIR`` writes, for every image,
``DIR/pred/<name>.png`` (the class-index mask as a palette PNG, at the size and orientation in which the image
is displayed, i.e. with its EXIF orientation applied) and ``DIR/vis/<name>.png`` (the classes' colours blended
over the image). Unreadable files are named in a warning, skipped and counted; the exit code is 1 when any
failed (the others are still written) and 2 for bad arguments or a checkpoint that does not fit.
"""

from __future__ import annotations

import argparse
import glob
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from zoo.datasets.cityscapes import CITYSCAPES_PALETTE
from zoo.datasets.io import read_image, voc_palette, write_mask
from zoo.inference import DEEPLAB_SCALES, Slide, infer_logits
from zoo.plots import overlay

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm")


# ------------------------------------------------------------------------------------------------------------ images


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Convert an ``H×W`` / ``H×W×1`` / ``H×W×3`` / ``H×W×4`` array (uint8, uint16 or float in 0..1) to uint8 RGB.

    Args:
        image: the array; an alpha channel is dropped, 16-bit values are scaled to 8 bits.
    """
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] in (1, 3, 4):
        array = array[..., :3] if array.shape[2] != 1 else array[..., 0]
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 RGB image (or gray/RGBA), got shape {array.shape}")
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype == np.uint16:
        return (array.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        return (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)
    raise ValueError(f"unsupported image dtype {array.dtype} (expected uint8, uint16 or float in 0..1)")


def find_images(spec: str | Path) -> list[Path]:
    """The image files an ``--input`` names: a file, a folder (its files with an image extension) or a glob.

    The list is deduplicated (by resolved path) and sorted.

    Args:
        spec: a file, a folder or a glob pattern (``**`` recurses).

    Raises:
        FileNotFoundError: nothing matches.
    """
    path = Path(spec)
    if path.is_dir():
        found = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
        if not found:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {path}")
    elif path.is_file():
        found = [path]
    else:
        found = [Path(p) for p in glob.glob(str(spec), recursive=True) if Path(p).is_file()]
        if not found:
            raise FileNotFoundError(f"--input {spec}: no such file or folder, and no file matches it as a glob")
    unique = {p.resolve(): p for p in found}
    return sorted(unique.values())


def output_names(paths: Sequence[Path]) -> list[str]:
    """One output name per input: the file stem, made unique with the extension and then a number."""
    stems = [p.stem for p in paths]
    names = [
        s if stems.count(s) == 1 else f"{s}_{p.suffix.lstrip('.').lower()}" for s, p in zip(stems, paths, strict=True)
    ]
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        unique.append(name if count == 0 else f"{name}_{count}")
    return unique


# ---------------------------------------------------------------------------------------------------------- palettes


def resolve_palette(
    choice: str, num_classes: int, stored: Sequence[Sequence[int]] | None = None
) -> list[tuple[int, int, int]]:
    """The colours of ``num_classes`` classes for ``--palette``.

    Args:
        choice: "auto" (the checkpoint's palette, else Cityscapes' for 19 classes, else VOC's colour map),
            "voc" or "cityscapes" (classes beyond the named palette get VOC's colour map).
        num_classes: number of classes.
        stored: the palette stored in the checkpoint, if any.
    """
    if choice == "auto":
        if stored is not None and len(stored) >= num_classes:
            return [tuple(int(v) for v in c) for c in stored[:num_classes]]
        choice = "cityscapes" if num_classes == 19 else "voc"
    if choice == "voc":
        return voc_palette(num_classes)
    if choice == "cityscapes":
        extra = voc_palette(num_classes)[len(CITYSCAPES_PALETTE) :]
        return [*CITYSCAPES_PALETTE[:num_classes], *extra]
    raise ValueError(f"--palette must be one of voc, cityscapes, auto; got {choice!r}")


# --------------------------------------------------------------------------------------------------------- predictor


class Predictor:
    """Runs a segmentation model on uint8 RGB images and returns class-index masks.

    Args:
        model: a :class:`~zoo.models.SegmentationModel` or any callable mapping normalised ``N×3×H×W`` tensors
            to logits ``N×C×H×W`` (e.g. :class:`zoo.export.OnnxModel`).
        num_classes: number of classes the model predicts.
        mean: RGB mean (0..1) of the input normalisation.
        std: RGB standard deviation (0..1) of the input normalisation.
        class_names: optional class names.
        palette: optional colour per class.
        device: where the input tensors go ("cpu", "cuda").
        scales: test-time scales (see :func:`zoo.inference.infer_logits`).
        flip: average with the mirrored image.
        slide: ``((crop_h, crop_w), (stride_h, stride_w))`` sliding-window inference, or None.
        batch_size: most images or windows per model call (None: all at once).
    """

    def __init__(
        self,
        model: Callable[[torch.Tensor], Any],
        *,
        num_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
        class_names: Sequence[str] | None = None,
        palette: Sequence[Sequence[int]] | None = None,
        device: str | torch.device = "cpu",
        scales: Sequence[float] = (1.0,),
        flip: bool = False,
        slide: Slide | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.model = model
        self.num_classes = int(num_classes)
        self.device = torch.device(device)
        self.mean = torch.tensor([float(v) for v in mean], device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor([float(v) for v in std], device=self.device).view(1, 3, 1, 1)
        self.class_names = list(class_names) if class_names is not None else None
        self.palette = [tuple(int(v) for v in c) for c in palette] if palette is not None else None
        self.scales = tuple(float(s) for s in scales)
        self.flip = bool(flip)
        self.slide = slide
        self.batch_size = batch_size

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path | None,
        device: str | torch.device = "cpu",
        *,
        backend: str = "torch",
        onnx: str | Path | None = None,
        fast: bool = False,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        encoder: str | None = None,
        **options: Any,
    ) -> Predictor:
        """A predictor for a ``zoo.save_model`` file or a training (Lightning) checkpoint.

        Args:
            path: the checkpoint (may be None with ``backend="onnx"`` when the ONNX file holds the description).
            device: "cpu" or "cuda".
            backend: "torch", or "onnx" to run ``onnx`` (a file from ``zoo export``) with ONNX Runtime.
            onnx: the ONNX file for ``backend="onnx"``.
            fast: run the model through :func:`zoo.optimize_for_inference` (torch backend).
            num_classes: the number of classes expected; a checkpoint with another number is an error.
            class_names: the class names expected; a checkpoint with other names is an error.
            encoder: the encoder name expected; a checkpoint built on another encoder is an error.
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
            from zoo.export import OnnxModel

            if onnx is None:
                raise ValueError("--backend onnx needs --onnx FILE")
            model: Any = OnnxModel(onnx, device=str(device))
            meta = _read_meta(path) if path is not None else model.meta
            if meta is None:
                raise ValueError(f"{onnx} holds no zoo model description: pass --checkpoint too")
            source = path if path is not None else onnx
        else:
            if path is None:
                raise ValueError("a checkpoint is needed (--checkpoint)")
            meta = _read_meta(path)
            source = path
        _check_expected(meta, source, num_classes, class_names, encoder)
        if backend == "torch":
            model = _load_weights(path, device)
            if fast:
                model = _LazyOptimized(model)
        return cls(
            model,
            num_classes=int(meta["build_args"]["num_classes"]),
            mean=meta["mean"],
            std=meta["std"],
            class_names=meta.get("class_names"),
            palette=meta.get("palette"),
            device=device,
            **options,
        )

    def _tensor(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        batch = np.stack([to_rgb_uint8(image) for image in images])
        x = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).float().div_(255)
        return (x - self.mean) / self.std

    def logits(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Averaged logits ``N×C×H×W`` of images of one size (``H×W×3`` uint8 RGB)."""
        x = self._tensor(images)
        return infer_logits(
            self.model, x, scales=self.scales, flip=self.flip, slide=self.slide, batch_size=self.batch_size
        )

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
    """Calls :func:`zoo.optimize_for_inference` on the first input it sees, then runs the optimised model."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.optimized: Callable | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.optimized is None:
            from zoo.optimize import optimize_for_inference

            self.optimized = optimize_for_inference(self.model, example_input=x)
        return self.optimized(x)


def _read_checkpoint(path: str | Path) -> dict[str, Any]:
    import pickle

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise ValueError(f"{path} is not a readable checkpoint: {error}") from None
    if not isinstance(checkpoint, dict) or "zoo" not in checkpoint or "state_dict" not in checkpoint:
        raise ValueError(f"{path} is not a zoo model file: expected the keys 'zoo' and 'state_dict'")
    return checkpoint


def _read_meta(path: str | Path) -> dict[str, Any]:
    return _read_checkpoint(path)["zoo"]


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


def _load_weights(path: str | Path, device: torch.device) -> torch.nn.Module:
    """``zoo.load_model``, with a description of expected vs found weights when they do not load."""
    from zoo.models import LIGHTNING_PREFIX, build_model, load_model

    try:
        return load_model(path, map_location=device)
    except ValueError as error:
        if "do not fit" not in str(error):
            raise
    checkpoint = _read_checkpoint(path)
    state = checkpoint["state_dict"]
    if any(k.startswith(LIGHTNING_PREFIX) for k in state):
        state = {k[len(LIGHTNING_PREFIX) :]: v for k, v in state.items() if k.startswith(LIGHTNING_PREFIX)}
    args = checkpoint["zoo"]["build_args"]
    expected = build_model(**{**args, "encoder_weights": None}).state_dict()
    problems = [f"{k}: expected {tuple(v.shape)}, found {tuple(state[k].shape)}"
                for k, v in expected.items() if k in state and state[k].shape != v.shape]  # fmt: skip
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing:
        problems.append(f"{len(missing)} expected tensors not found (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors found (e.g. {', '.join(unexpected[:3])})")
    what = f"encoder {args['encoder']!r}, decoder {args['decoder']!r}, {args['num_classes']} classes"
    raise ValueError(
        f"{path}: the weights do not fit the model its build_args describe ({what}): " + "; ".join(problems)
    )


# --------------------------------------------------------------------------------------------------------------- CLI


def _pair(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def add_inference_arguments(parser: argparse.ArgumentParser) -> None:
    """The test-time options shared by ``zoo predict`` and ``zoo eval``."""
    group = parser.add_argument_group("test-time augmentation and sliding window")
    group.add_argument("--tta", action="store_true", help=f"DeepLab's multi-scale + flip: scales {DEEPLAB_SCALES}")
    group.add_argument(
        "--scales", type=float, nargs="+", default=None, help="image scales to average (e.g. 0.75 1 1.25)"
    )
    group.add_argument("--flip", action="store_true", help="average with the horizontally mirrored image")
    group.add_argument("--slide", action="store_true", help="sliding-window inference (windows of --crop)")
    group.add_argument("--crop", type=_pair, nargs=2, metavar=("H", "W"), default=None, help="window size (513 513)")
    group.add_argument("--stride", type=_pair, nargs=2, metavar=("H", "W"), default=None, help="window step (2/3 crop)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch-size", type=_pair, default=1, help="images (or windows) per forward pass")


def inference_options(args: argparse.Namespace) -> dict[str, Any]:
    """``scales``, ``flip``, ``slide`` and ``batch_size`` from the parsed test-time options."""
    scales = tuple(args.scales) if args.scales else (DEEPLAB_SCALES if args.tta else (1.0,))
    slide = None
    if args.slide or args.crop or args.stride:
        crop = tuple(args.crop) if args.crop else (513, 513)
        stride = tuple(args.stride) if args.stride else tuple(math.ceil(2 * c / 3) for c in crop)
        if stride[0] > crop[0] or stride[1] > crop[1]:
            raise ValueError(f"--stride {stride[0]} {stride[1]} is larger than --crop {crop[0]} {crop[1]}")
        slide = (crop, stride)
    return {"scales": scales, "flip": bool(args.flip or args.tta), "slide": slide, "batch_size": args.batch_size}


def register(subparsers: Any) -> None:
    """Add ``zoo predict`` to the ``zoo`` command's subparsers."""
    parser = subparsers.add_parser(
        "predict",
        help="segment images with a trained model",
        description="Write DIR/pred/<name>.png (class-index palette PNG) and DIR/vis/<name>.png (overlay).",
    )
    parser.add_argument("--checkpoint", type=Path, default=None, help="zoo.save_model file or Lightning checkpoint")
    parser.add_argument("--input", required=True, help="an image file, a folder of images, or a glob pattern")
    parser.add_argument("--output", required=True, type=Path, help="output folder")
    parser.add_argument("--palette", choices=("voc", "cityscapes", "auto"), default="auto", help="overlay colours")
    parser.add_argument("--opacity", type=float, default=0.5, help="weight of the class colour in the overlay")
    parser.add_argument(
        "--backend", choices=("torch", "onnx"), default="torch", help="run with PyTorch or ONNX Runtime"
    )
    parser.add_argument("--onnx", type=Path, default=None, help="ONNX file from zoo export (--backend onnx)")
    parser.add_argument(
        "--fast",
        action="store_true",
        help="zoo.optimize_for_inference (on the CPU: ONNX Runtime, a fixed graph for each of the first 4 input "
        "sizes, one graph with dynamic sizes for all others)",
    )
    parser.add_argument("--num-classes", type=int, default=None, help="fail unless the checkpoint has this many")
    parser.add_argument("--classes", default=None, help="comma-separated class names the checkpoint must have")
    parser.add_argument("--encoder", default=None, help="fail unless the checkpoint was built on this encoder")
    add_inference_arguments(parser)
    parser.set_defaults(func=run)


def _error(message: str) -> int:
    print(f"zoo predict: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """Run ``zoo predict``; returns the exit code (0 ok, 1 some images failed, 2 bad arguments)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if not 0.0 <= args.opacity <= 1.0:
        return _error(f"--opacity must be in [0, 1], got {args.opacity}")
    try:
        options = inference_options(args)
        classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
        predictor = Predictor.from_checkpoint(
            args.checkpoint,
            args.device,
            backend=args.backend,
            onnx=args.onnx,
            fast=args.fast,
            num_classes=args.num_classes,
            class_names=classes,
            encoder=args.encoder,
            **options,
        )
        palette = resolve_palette(args.palette, predictor.num_classes, predictor.palette)
        paths = find_images(args.input)
    except (FileNotFoundError, ValueError) as error:
        return _error(str(error))
    names = output_names(paths)
    pred_dir, vis_dir = args.output / "pred", args.output / "vis"
    vis_dir.mkdir(parents=True, exist_ok=True)
    err = Console(stderr=True)
    failures = 0
    start = time.perf_counter()
    columns = (TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task("predict", total=len(paths))
        for first in range(0, len(paths), args.batch_size):
            chunk = list(
                zip(paths[first : first + args.batch_size], names[first : first + args.batch_size], strict=True)
            )
            images, kept = [], []
            for path, name in chunk:
                try:
                    images.append(read_image(path))
                    kept.append(name)
                except Exception as error:  # any unreadable file is reported and skipped
                    failures += 1
                    err.print(f"[yellow]warning:[/] skipped {path}: {error}", highlight=False)
            if images:
                for image, name, mask in zip(images, kept, predictor.predict_batch(images), strict=True):
                    write_mask(pred_dir / f"{name}.png", mask, palette)
                    Image.fromarray(overlay(image, mask, palette, args.opacity)).save(vis_dir / f"{name}.png")
            progress.advance(task, len(chunk))
    seconds = time.perf_counter() - start
    done = len(paths) - failures
    print(
        f"{done} images, {failures} failed, {seconds:.2f} s, {done / max(seconds, 1e-9):.2f} images/s "
        f"-> {pred_dir} and {vis_dir}"
    )
    return 1 if failures else 0


__all__ = [
    "Predictor",
    "find_images",
    "output_names",
    "resolve_palette",
    "to_rgb_uint8",
]
