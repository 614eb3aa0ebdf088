"""Training losses by name, and weighted sums of them: ``"ce"``, ``"dice"``, ``"ce+0.5*dice"``.

Dice, Focal and Lovász come from ``segmentation_models_pytorch.losses`` (smp keeps them tested against their
papers; no reason to write them again); cross-entropy is PyTorch's. smp has no OHEM cross-entropy, so
:class:`OhemCrossEntropy` follows MMSegmentation's ``OHEMPixelSampler`` (hard pixels: probability of the true class
below ``threshold``, at least ``min_kept`` of them). Every loss leaves out pixels labelled ``ignore_index``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from zoo.data.io import IGNORE_INDEX

LOSS_NAMES = ("ce", "dice", "focal", "lovasz", "ohem")
_TERM = re.compile(r"^\s*(?:(?P<weight>\d+(?:\.\d*)?|\.\d+)\s*\*\s*)?(?P<name>[a-z_0-9]+)\s*$")


class CrossEntropy(nn.Module):
    """Cross-entropy over pixels, optionally class-weighted, ignoring ``ignore_index``."""

    def __init__(self, ignore_index: int = IGNORE_INDEX, class_weights: torch.Tensor | None = None) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.register_buffer("weight", class_weights, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target, weight=self.weight, ignore_index=self.ignore_index)


class OhemCrossEntropy(CrossEntropy):
    """Cross-entropy over the hard pixels only (online hard example mining, MMSegmentation's pixel sampler).

    Args:
        ignore_index: target value whose pixels are left out.
        class_weights: per-class weights of the cross-entropy.
        threshold: a pixel is hard when the softmax probability of its true class is below this.
        min_kept: at least this many pixels are kept (the hardest ones) when fewer are below the threshold.
    """

    def __init__(
        self,
        ignore_index: int = IGNORE_INDEX,
        class_weights: torch.Tensor | None = None,
        threshold: float = 0.7,
        min_kept: int = 100_000,
    ) -> None:
        super().__init__(ignore_index, class_weights)
        self.threshold = threshold
        self.min_kept = min_kept

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        valid = target != self.ignore_index
        with torch.no_grad():
            prob = logits.softmax(1).gather(1, target.where(valid, 0).unsqueeze(1)).squeeze(1)
            prob = prob.where(valid, torch.ones_like(prob))
            count = int(valid.sum())
            kept = min(self.min_kept, count)
            threshold = self.threshold
            if kept > 0:
                threshold = max(threshold, float(prob.flatten().kthvalue(kept).values))
            hard = valid & (prob <= threshold)
        pixel_loss = F.cross_entropy(logits, target.where(hard, self.ignore_index), weight=self.weight,
                                     ignore_index=self.ignore_index, reduction="none")  # fmt: skip
        if self.weight is None:
            return pixel_loss.sum() / hard.sum().clamp(min=1)
        return pixel_loss.sum() / self.weight[target.where(hard, 0)].where(hard, 0).sum().clamp(min=1e-12)


class WeightedSum(nn.Module):
    """``sum(weight * loss(logits, target))`` over named terms."""

    def __init__(self, terms: Sequence[tuple[float, str, nn.Module]]) -> None:
        super().__init__()
        self.weights = [w for w, _, _ in terms]
        self.names = [n for _, n, _ in terms]
        self.losses = nn.ModuleList([loss for _, _, loss in terms])

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(w * loss(logits, target) for w, loss in zip(self.weights, self.losses, strict=True))


def parse_loss(spec: str) -> list[tuple[float, str]]:
    """``"ce+0.5*dice"`` -> [(1.0, "ce"), (0.5, "dice")].

    Raises:
        ValueError: a term that is not ``[WEIGHT*]NAME`` or an unknown name (the message lists the valid ones).
    """
    terms = []
    for text in str(spec).split("+"):
        match = _TERM.match(text.lower())
        if match is None:
            raise ValueError(f"loss: expected NAME or WEIGHT*NAME terms joined by '+', got {spec!r}")
        name = match["name"]
        if name not in LOSS_NAMES:
            raise ValueError(f"loss: unknown loss {name!r} in {spec!r}; valid: {', '.join(LOSS_NAMES)}")
        terms.append((float(match["weight"] or 1.0), name))
    return terms


def build_loss(
    spec: str = "ce", ignore_index: int = IGNORE_INDEX, class_weights: Sequence[float] | None = None
) -> WeightedSum:
    """The loss ``spec`` names (see :func:`parse_loss`), every term ignoring ``ignore_index``.

    Args:
        spec: e.g. ``"ce"``, ``"ohem"``, ``"ce+0.5*dice"``, ``"focal+lovasz"``.
        ignore_index: target value whose pixels are left out.
        class_weights: per-class weights for the cross-entropy terms (ce, ohem) and smp's Dice and Focal.
    """
    weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
    listed = list(class_weights) if class_weights is not None else None

    def make(name: str) -> nn.Module:
        if name == "ce":
            return CrossEntropy(ignore_index, weights)
        if name == "ohem":
            return OhemCrossEntropy(ignore_index, weights)
        if name == "dice":
            return smp.losses.DiceLoss("multiclass", ignore_index=ignore_index, class_weights=listed)
        if name == "focal":
            return smp.losses.FocalLoss("multiclass", ignore_index=ignore_index, class_weights=listed)
        return smp.losses.LovaszLoss("multiclass", ignore_index=ignore_index)

    return WeightedSum([(weight, name, make(name)) for weight, name in parse_loss(spec)])


__all__ = ["LOSS_NAMES", "CrossEntropy", "OhemCrossEntropy", "WeightedSum", "build_loss", "parse_loss"]
