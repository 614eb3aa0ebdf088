"""Evaluation of a predictor on a dataset split, the DeepLab evaluation protocol (``zoo eval``).

Every image is segmented at its full resolution (no resize; optionally multi-scale + flip and a sliding
window, see :func:`zoo.infer.tta.infer_logits`; optionally padded at the bottom and right to a fixed size first,
as TF DeepLab's eval pads to its eval crop, see :func:`zoo.infer.predictor.deeplab_eval_crop`), one confusion
matrix is accumulated over the whole split with torchmetrics (pixels labelled 255 left out), and the per-class
IoU and the mean IoU over the classes present in the ground truth or the prediction are reported. The command
prints a per-class IoU table and writes ``confusion_matrix.png``, ``class_iou.png`` and ``metrics.json`` to its
output folder.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import track

from zoo.data.io import IGNORE_INDEX
from zoo.infer.predictor import Predictor
from zoo.metrics import SegmentationScores, confusion_matrix_metric, scores_from_confusion
from zoo.viz import plot_class_iou, plot_confusion_matrix


def evaluate(
    predictor: Predictor,
    dataset: Any,
    *,
    progress: bool = True,
    show: Callable[[dict[str, Any], np.ndarray], None] | None = None,
) -> SegmentationScores:
    """Scores of a :class:`~zoo.infer.predictor.Predictor` on a dataset (items without transform: uint8 image and mask).

    Args:
        predictor: the predictor (its scales/flip/slide options apply).
        dataset: a dataset whose items are ``dict(image=H×W×3 uint8, mask=H×W train ids, 255 = ignore)``.
        progress: show a progress bar.
        show: called with each item and its predicted mask (``zoo eval --show-dir`` writes them).

    Raises:
        ValueError: the dataset and the predictor disagree on the number of classes, or an image and its mask
            differ in size.
    """
    num_classes = int(getattr(dataset, "num_classes", predictor.num_classes))
    if num_classes != predictor.num_classes:
        raise ValueError(f"the dataset has {num_classes} classes, the checkpoint predicts {predictor.num_classes}")
    metric = confusion_matrix_metric(num_classes, getattr(dataset, "ignore_index", IGNORE_INDEX))
    for index in track(range(len(dataset)), description="eval", transient=True, disable=not progress):
        score_item(predictor, metric, dataset[index], index, show)
    return scores_from_confusion(metric.compute())


def score_item(
    predictor: Predictor,
    metric: Any,
    item: dict[str, Any],
    index: int,
    show: Callable[[dict[str, Any], np.ndarray], None] | None = None,
    device: torch.device | str = "cpu",
) -> None:
    """Predict one dataset item, hand it to ``show`` and add it to the confusion-matrix ``metric``.

    Raises:
        ValueError: the item's image and mask differ in size (named by the item's name, else ``index``).
    """
    image, mask = item["image"], np.asarray(item["mask"])
    if image.shape[:2] != mask.shape[:2]:
        name = item.get("name", index)
        raise ValueError(f"{name}: image {image.shape[:2]} and mask {mask.shape[:2]} differ in size")
    prediction = predictor.predict(image)
    if show is not None:
        show(item, prediction)
    truth = torch.from_numpy(mask.astype(np.int64)).to(device)
    metric.update(torch.from_numpy(prediction.astype(np.int64)).to(device), truth)


def save_results(scores: SegmentationScores, class_names: Sequence[str], output: Path, info: dict[str, Any]) -> None:
    """Write ``confusion_matrix.png``, ``class_iou.png`` and ``metrics.json`` to ``output``."""
    output.mkdir(parents=True, exist_ok=True)
    plot_confusion_matrix(scores.confusion.cpu().numpy(), class_names, output / "confusion_matrix.png")
    plot_class_iou(scores.iou.cpu().numpy(), class_names, output / "class_iou.png")
    metrics = {**scores.as_dict(class_names), **info}
    metrics["confusion_matrix"] = scores.confusion.cpu().tolist()
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2))


__all__ = ["evaluate", "save_results", "score_item"]
