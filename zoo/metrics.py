"""Segmentation scores from a confusion matrix.

The confusion matrix itself is accumulated by torchmetrics (``MulticlassConfusionMatrix`` with
``ignore_index=255``): its state is summed over batches and, under DDP, over processes when
``compute()`` is called, so one matrix covers the whole split. This module only turns that matrix
into IoU, mIoU and pixel accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from rich.console import Console
from rich.table import Table
from torchmetrics.classification import MulticlassConfusionMatrix

from zoo.data.io import IGNORE_INDEX


def confusion_matrix_metric(num_classes: int, ignore_index: int = IGNORE_INDEX) -> MulticlassConfusionMatrix:
    """A torchmetrics confusion matrix (rows: ground truth, columns: prediction) that skips ``ignore_index``.

    Args:
        num_classes: number of classes.
        ignore_index: target value whose pixels are left out.
    """
    return MulticlassConfusionMatrix(num_classes=num_classes, ignore_index=ignore_index)


@dataclass(frozen=True)
class SegmentationScores:
    """Scores of one confusion matrix.

    Attributes:
        iou: per-class IoU (C,), NaN for classes absent from both ground truth and prediction.
        miou: mean IoU over the classes present in the ground truth or the prediction.
        pixel_accuracy: correctly labelled pixels / labelled pixels (ignore pixels excluded).
        confusion: the C×C matrix (rows: ground truth, columns: prediction).
    """

    iou: torch.Tensor
    miou: float
    pixel_accuracy: float
    confusion: torch.Tensor


def scores_from_confusion(confusion: torch.Tensor) -> SegmentationScores:
    """IoU per class, mIoU and pixel accuracy of a confusion matrix.

    IoU_c = TP_c / (TP_c + FP_c + FN_c). A class with no pixel in the ground truth nor in the prediction
    has no IoU (NaN) and is left out of the mean.

    Args:
        confusion: C×C counts, rows ground truth, columns prediction.
    """
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"confusion must be a square C×C matrix, got shape {tuple(confusion.shape)}")
    cm = confusion.double()
    tp = cm.diagonal()
    union = cm.sum(0) + cm.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
    present = union > 0
    miou = float(iou[present].mean()) if present.any() else float("nan")
    total = cm.sum()
    accuracy = float(tp.sum() / total) if total > 0 else float("nan")
    return SegmentationScores(iou=iou.float(), miou=miou, pixel_accuracy=accuracy, confusion=confusion)


def print_scores(scores: SegmentationScores, class_names: Sequence[str], title: str = "IoU") -> None:
    """Print the per-class IoU table, mIoU and pixel accuracy (rich)."""
    table = Table(title=title)
    table.add_column("class")
    table.add_column("IoU", justify="right")
    for name, iou in zip(class_names, scores.iou.tolist(), strict=True):
        table.add_row(str(name), "-" if iou != iou else f"{iou:.4f}")
    table.add_section()
    table.add_row("mIoU", f"{scores.miou:.4f}")
    table.add_row("pixel accuracy", f"{scores.pixel_accuracy:.4f}")
    Console().print(table)


__all__ = ["SegmentationScores", "confusion_matrix_metric", "print_scores", "scores_from_confusion"]
