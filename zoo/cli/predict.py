"""``zoo predict``: segment images with a trained model.

``zoo predict --checkpoint CKPT --input FILE|DIR|GLOB --output DIR`` writes, for every image,
``DIR/pred/<name>.png`` (the class-index mask as a palette PNG, at the size and orientation in which the image
is displayed, i.e. with its EXIF orientation applied) and ``DIR/vis/<name>.png`` (the classes' colours blended
over the image). Unreadable files are named in a warning, skipped and counted; the exit code is 1 when any
failed (the others are still written) and 2 for bad arguments or a checkpoint that does not fit.
"""

from __future__ import annotations

import argparse
import functools
import glob
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zoo.cli.options import add_fast_argument, add_inference_arguments, add_precision_arguments, examples
from zoo.cli.scale import add_scale_arguments, run_predict


def find_images(spec: str | Path) -> list[Path]:
    """The image files an ``--input`` names: a file, a folder (its files with an image extension) or a glob.

    The list is deduplicated (by resolved path) and sorted.

    Args:
        spec: a file, a folder or a glob pattern (``**`` recurses).

    Raises:
        FileNotFoundError: nothing matches.
    """
    from zoo.data.io import image_files

    path = Path(spec)
    if path.is_dir():
        found = image_files(path)
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
    from zoo.data.cityscapes import CITYSCAPES_PALETTE
    from zoo.data.io import voc_palette

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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``zoo predict``."""
    parser.description = "Write DIR/pred/<name>.png (class-index palette PNG) and DIR/vis/<name>.png (overlay)."
    parser.epilog = examples(
        "zoo predict --checkpoint model.pt --input photo.jpg --output out/",
        "zoo predict --checkpoint model.pt --input 'photos/**/*.jpg' --output out/ --tta",
        "zoo predict --onnx model.onnx --input photos/ --output out/",
        "zoo predict --checkpoint model.pt --input photos/ --output out/ --precision int8 --calibration calib/",
    )
    parser.add_argument("--checkpoint", type=Path, default=None, help="zoo.save_model file or Lightning checkpoint")
    parser.add_argument(
        "--onnx", type=Path, default=None, help="run this ONNX file (zoo export) with ONNX Runtime instead"
    )
    parser.add_argument("--input", required=True, help="an image file, a folder of images, or a glob pattern")
    parser.add_argument("--output", required=True, type=Path, help="output folder")
    parser.add_argument("--palette", choices=("voc", "cityscapes", "auto"), default="auto", help="overlay colours")
    parser.add_argument("--opacity", type=float, default=0.5, help="weight of the class colour in the overlay")
    parser.add_argument(
        "--legend", action=argparse.BooleanOptionalAction, default=True, help="name the classes present below vis/"
    )
    parser.add_argument("--side-by-side", action="store_true", help="vis/ shows the image beside its overlay")
    parser.add_argument(
        "--backend", choices=("torch", "onnx"), default=None, help="torch, or onnx (the default with --onnx)"
    )
    add_fast_argument(parser)
    add_precision_arguments(parser)
    parser.add_argument("--num-classes", type=int, default=None, help="fail unless the checkpoint has this many")
    parser.add_argument(
        "--classes", dest="class_names", default=None, help="comma-separated class names the checkpoint must have"
    )
    parser.add_argument("--encoder", default=None, help="fail unless the checkpoint was built on this encoder")
    add_inference_arguments(parser)
    add_scale_arguments(parser, resumable=True)


def build_predictor(args: argparse.Namespace) -> Any:
    """The :class:`zoo.Predictor` the arguments describe: an ONNX file alone implies ONNX Runtime, any precision
    but fp32 implies the fast path; the checkpoint's classes and encoder are checked against what was asked."""
    from zoo.checkpoint import read_checkpoint
    from zoo.cli.options import inference_options
    from zoo.infer.predictor import Predictor, check_expected
    from zoo.infer.tta import DEEPLAB_SCALES

    options = inference_options(args, DEEPLAB_SCALES)
    backend = args.backend or ("onnx" if args.onnx else "torch")
    if backend == "onnx":
        if args.onnx is None:
            raise ValueError("--backend onnx needs --onnx FILE")
        if args.fast or args.precision != "fp32" or args.fast_backend != "auto":
            raise ValueError("--fast and --precision run a checkpoint; an --onnx file runs as it was exported")
        meta = read_checkpoint(args.checkpoint)["zoo"] if args.checkpoint else None
        predictor = Predictor.from_onnx(args.onnx, args.device, meta=meta, **options)
        source = args.onnx
    else:
        if args.checkpoint is None:
            raise ValueError("give --checkpoint FILE (or --onnx FILE)")
        if args.onnx is not None:
            raise ValueError("--onnx FILE runs with ONNX Runtime: drop --backend torch")
        predictor = Predictor.from_checkpoint(
            args.checkpoint,
            args.device,
            fast=args.fast,
            precision=args.precision,
            calibration=args.calibration,
            backend=args.fast_backend,
            **options,
        )
        source = args.checkpoint
    classes = [c.strip() for c in args.class_names.split(",")] if args.class_names else None
    check_expected(predictor, source, num_classes=args.num_classes, class_names=classes, encoder=args.encoder)
    return predictor


def _vis(image: Any, mask: Any, palette: Any, class_names: list[str], args: argparse.Namespace) -> Any:
    """The vis/ picture: the overlay (beside the image with --side-by-side), above a legend unless --no-legend."""
    from zoo.viz import panels

    return panels(
        image,
        [mask],
        class_names,
        palette,
        opacity=args.opacity,
        with_image=args.side_by_side,
        legend=args.legend,
        min_height=0,
    )


def run(args: argparse.Namespace) -> int:
    """Run ``zoo predict``; returns the exit code (0 ok, 1 some images failed, 2 bad arguments)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from zoo.data.io import read_image, write_image, write_mask

    if not 0.0 <= args.opacity <= 1.0:
        raise ValueError(f"--opacity must be in [0, 1], got {args.opacity}")
    predictor = build_predictor(args)
    palette = resolve_palette(args.palette, predictor.num_classes, predictor.palette)
    names_of = predictor.class_names or [str(i) for i in range(predictor.num_classes)]
    if args.devices is not None:  # through Lightning's Trainer: zoo.infer.batch
        render = functools.partial(_vis, palette=palette, class_names=names_of, args=args)
        return run_predict(args, predictor, palette, render, output_names)
    paths = find_images(args.input)
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
                    err.print(f"[yellow]warning:[/] skipped {path}: {error}", highlight=False, soft_wrap=True)
            if images:
                for image, name, mask in zip(images, kept, predictor.predict_batch(images), strict=True):
                    write_mask(pred_dir / f"{name}.png", mask, palette)
                    write_image(vis_dir / f"{name}.png", _vis(image, mask, palette, names_of, args))
            progress.advance(task, len(chunk))
    seconds = time.perf_counter() - start
    done = len(paths) - failures
    print(
        f"{done} images, {failures} failed, {seconds:.2f} s, {done / max(seconds, 1e-9):.2f} images/s "
        f"-> {pred_dir} and {vis_dir}"
    )
    return 1 if failures else 0
