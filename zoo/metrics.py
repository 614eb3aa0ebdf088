"""Segmentation scores from a confusion matrix.

The confusion matrix itself is accumulated by torchmetrics (``MulticlassConfusionMatrix`` with
``ignore_index=255``): its state is summed over batches and, under DDP, over processes when
``compute()`` is called, so one matrix covers the whole split. This module only turns that matrix
into IoU, mIoU and pixel accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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
    """Scores of one confusion matrix: MMSegmentation's set (IoU, Acc, Dice, F-score per class; mIoU, mAcc, aAcc).

    Per-class values are NaN for a class that has no pixel in the ground truth nor in the prediction (and Acc for
    a class absent from the ground truth); means are taken over the classes that have a value.

    Attributes:
        iou: per-class IoU, TP / (TP + FP + FN).
        acc: per-class accuracy (recall), TP / (TP + FN).
        dice: per-class Dice, 2 TP / (2 TP + FP + FN), which equals the F-score (beta 1) of precision and recall.
        precision: per-class precision, TP / (TP + FP).
        miou, macc, mdice: the means of ``iou``, ``acc`` and ``dice``.
        pixel_accuracy: aAcc, correctly labelled pixels / labelled pixels (ignore pixels excluded).
        confusion: the C×C matrix (rows: ground truth, columns: prediction).
    """

    iou: torch.Tensor
    miou: float
    pixel_accuracy: float
    confusion: torch.Tensor
    acc: torch.Tensor
    dice: torch.Tensor
    precision: torch.Tensor
    macc: float
    mdice: float

    def as_dict(self, class_names: Sequence[str]) -> dict[str, Any]:
        """The scores as plain data (JSON): means, and per-class values by class name (None for NaN)."""
        per_class = {
            "iou": self.iou,
            "acc": self.acc,
            "dice": self.dice,
            "fscore": self.dice,
            "precision": self.precision,
        }
        out: dict[str, Any] = {"miou": self.miou, "macc": self.macc, "mdice": self.mdice, "aacc": self.pixel_accuracy}
        for key, values in per_class.items():
            out[key] = {str(n): (None if v != v else v) for n, v in zip(class_names, values.tolist(), strict=True)}
        return out


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    return torch.where(denominator > 0, numerator / denominator.clamp(min=1), torch.full_like(numerator, float("nan")))


def _nanmean(values: torch.Tensor) -> float:
    kept = values[~values.isnan()]
    return float(kept.mean()) if kept.numel() else float("nan")


def scores_from_confusion(confusion: torch.Tensor) -> SegmentationScores:
    """IoU, Acc, Dice and precision per class, their means and the pixel accuracy of a confusion matrix.

    Args:
        confusion: C×C counts, rows ground truth, columns prediction.
    """
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"confusion must be a square C×C matrix, got shape {tuple(confusion.shape)}")
    cm = confusion.double()
    tp, truth, predicted = cm.diagonal(), cm.sum(1), cm.sum(0)
    iou = _ratio(tp, truth + predicted - tp)
    acc, precision, dice = _ratio(tp, truth), _ratio(tp, predicted), _ratio(2 * tp, truth + predicted)
    total = cm.sum()
    accuracy = float(tp.sum() / total) if total > 0 else float("nan")
    return SegmentationScores(
        iou=iou.float(),
        miou=_nanmean(iou),
        pixel_accuracy=accuracy,
        confusion=confusion,
        acc=acc.float(),
        dice=dice.float(),
        precision=precision.float(),
        macc=_nanmean(acc),
        mdice=_nanmean(dice),
    )


def print_scores(scores: SegmentationScores, class_names: Sequence[str], title: str = "IoU") -> None:
    """Print the per-class table (IoU, Acc, Dice/F-score) and mIoU, mAcc, mDice, aAcc (rich)."""
    table = Table(title=title)
    table.add_column("class")
    columns = {"IoU": scores.iou, "Acc": scores.acc, "Dice (F1)": scores.dice}
    for header in columns:
        table.add_column(header, justify="right")
    for index, name in enumerate(class_names):
        values = [float(v[index]) for v in columns.values()]
        table.add_row(str(name), *("-" if v != v else f"{v:.4f}" for v in values))
    table.add_section()
    table.add_row("mean", f"{scores.miou:.4f}", f"{scores.macc:.4f}", f"{scores.mdice:.4f}")
    table.add_row("aAcc (pixel accuracy)", f"{scores.pixel_accuracy:.4f}", "", "")
    Console().print(table)


__all__ = ["SegmentationScores", "confusion_matrix_metric", "print_scores", "scores_from_confusion"]
