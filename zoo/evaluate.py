"""``zoo eval``: a checkpoint on a dataset split, the DeepLab evaluation protocol.

Every image is segmented at its full resolution (no resize; optionally multi-scale + flip and a sliding
window, see :func:`zoo.inference.infer_logits`), one confusion matrix is accumulated over the whole split
with torchmetrics (pixels labelled 255 left out), and the per-class IoU and the mean IoU over the classes
present in the ground truth or the prediction are reported. The command prints a per-class IoU table and
writes ``confusion_matrix.png``, ``class_iou.png`` and ``metrics.json`` to ``--output``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.metrics import SegmentationScores, confusion_matrix_metric, print_scores, scores_from_confusion

IGNORE_INDEX = 255


def evaluate(predictor: Any, dataset: Any, *, progress: bool = True) -> SegmentationScores:
    """Scores of a :class:`zoo.predict.Predictor` on a dataset (items without transform: uint8 image and mask).

    Args:
        predictor: the predictor (its scales/flip/slide options apply).
        dataset: a dataset whose items are ``dict(image=H×W×3 uint8, mask=H×W train ids, 255 = ignore)``.
        progress: show a progress bar.

    Raises:
        ValueError: the dataset and the predictor disagree on the number of classes, or an image and its mask
            differ in size.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    num_classes = int(getattr(dataset, "num_classes", predictor.num_classes))
    if num_classes != predictor.num_classes:
        raise ValueError(f"the dataset has {num_classes} classes, the checkpoint predicts {predictor.num_classes}")
    metric = confusion_matrix_metric(num_classes, IGNORE_INDEX)
    columns = (TextColumn("eval"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True, disable=not progress) as bar:
        task = bar.add_task("eval", total=len(dataset))
        for index in range(len(dataset)):
            item = dataset[index]
            image, mask = item["image"], np.asarray(item["mask"])
            if image.shape[:2] != mask.shape[:2]:
                name = item.get("name", index)
                raise ValueError(f"{name}: image {image.shape[:2]} and mask {mask.shape[:2]} differ in size")
            prediction = predictor.predict(image)
            metric.update(torch.from_numpy(prediction.astype(np.int64)), torch.from_numpy(mask.astype(np.int64)))
            bar.advance(task)
    return scores_from_confusion(metric.compute())


def save_results(scores: SegmentationScores, class_names: Sequence[str], output: Path, info: dict[str, Any]) -> None:
    """Write ``confusion_matrix.png``, ``class_iou.png`` and ``metrics.json`` to ``output``."""
    from zoo.plots import plot_class_iou, plot_confusion_matrix

    output.mkdir(parents=True, exist_ok=True)
    plot_confusion_matrix(scores.confusion.cpu().numpy(), class_names, output / "confusion_matrix.png")
    plot_class_iou(scores.iou.cpu().numpy(), class_names, output / "class_iou.png")
    ious = {str(n): (None if v != v else v) for n, v in zip(class_names, scores.iou.tolist(), strict=True)}
    metrics = {"miou": scores.miou, "pixel_accuracy": scores.pixel_accuracy, "iou": ious, **info}
    metrics["confusion_matrix"] = scores.confusion.cpu().tolist()
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2))


def register(subparsers: Any) -> None:
    """Add ``zoo eval`` to the ``zoo`` command's subparsers."""
    from zoo.predict import add_inference_arguments

    parser = subparsers.add_parser(
        "eval",
        help="evaluate a checkpoint on a dataset split (mIoU, per-class IoU, plots)",
        description="DeepLab evaluation: full-resolution images, one confusion matrix over the split, mIoU.",
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="zoo.save_model file or Lightning checkpoint")
    parser.add_argument("--dataset", required=True, help="dataset name (voc, cityscapes, folder, shapes)")
    parser.add_argument("--root", required=True, type=Path, help="dataset root folder")
    parser.add_argument("--split", default="val", help="split to evaluate (default val)")
    parser.add_argument("--output", required=True, type=Path, help="folder for the plots and metrics.json")
    add_inference_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``zoo eval``; returns the exit code (2 for bad arguments, data or checkpoint)."""
    from zoo.datasets import build_dataset
    from zoo.predict import Predictor, inference_options

    try:
        options = inference_options(args)
        predictor = Predictor.from_checkpoint(args.checkpoint, args.device, **options)
        dataset = build_dataset(args.dataset, root=args.root, split=args.split)
        class_names = list(getattr(dataset, "classes", None) or predictor.class_names or [])
        if len(class_names) != predictor.num_classes:
            class_names = [str(i) for i in range(predictor.num_classes)]
        start = time.perf_counter()
        scores = evaluate(predictor, dataset)
    except (FileNotFoundError, KeyError, ValueError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"zoo eval: error: {message}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    slide = options["slide"]
    setting = f"scales {list(options['scales'])}, flip {options['flip']}, slide {slide}"
    print_scores(scores, class_names, title=f"{args.dataset} {args.split}: {len(dataset)} images ({setting})")
    info = {
        "checkpoint": str(args.checkpoint),
        "dataset": args.dataset,
        "split": args.split,
        "images": len(dataset),
        "scales": list(options["scales"]),
        "flip": options["flip"],
        "slide": [list(v) for v in slide] if slide else None,
        "seconds": seconds,
    }
    save_results(scores, class_names, args.output, info)
    print(f"mIoU {scores.miou:.4f} over {len(dataset)} images ({seconds:.1f} s); plots and metrics in {args.output}")
    return 0


__all__ = ["evaluate", "print_scores", "save_results"]
