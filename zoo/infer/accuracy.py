"""What lower precision costs: pixel agreement with the fp32 model, mIoU of both, and the calibration's coverage.

:func:`quantization_report` runs the fp32 model and the lower-precision one on the same images. For an int8
model it also measures the activation ranges of those images and compares them with the calibrated ones, so
that a calibration on too few images, or on images unlike the data, shows in the report as a warning rather
than as a silent loss of accuracy.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from zoo.data.io import IGNORE_INDEX
from zoo.errors import ArgumentError
from zoo.infer.quantize import RangeCollector, dynamic_graph, image_tensor, range_table
from zoo.metrics import confusion_matrix_metric, scores_from_confusion

MIN_CALIBRATION_IMAGES = 16
RANGE_SLACK = 0.25  # a tensor leaves its calibrated range when it overshoots it by more than 25% of the range
MIN_RANGE_COVERAGE = 0.8


@dataclass
class QuantizationReport:
    """What lower precision cost on a set of images, against the fp32 model.

    Attributes:
        images: images compared.
        pixels: pixels compared.
        pixel_agreement: share of pixels where both predict the same class.
        worst_image_agreement: the lowest per-image pixel agreement.
        miou_reference: the fp32 model's mIoU (None without masks).
        miou_quantized: the lower-precision model's mIoU (None without masks).
        calibration_images: images the int8 ranges were calibrated on (None for bf16).
        range_coverage: share of the quantized tensors whose values on these images stay within their calibrated
            range (25% slack); None when not measured.
        worst_tensors: the tensors that overshoot their calibrated range most, with the overshoot in ranges.
        warnings: what the numbers say about the calibration or the accuracy.
    """

    images: int
    pixels: int
    pixel_agreement: float
    worst_image_agreement: float
    miou_reference: float | None = None
    miou_quantized: float | None = None
    calibration_images: int | None = None
    range_coverage: float | None = None
    worst_tensors: list[tuple[str, float]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The report as short lines of text."""
        out = [
            f"pixel agreement with fp32: {100 * self.pixel_agreement:.2f}% over {self.images} images "
            f"({self.pixels} pixels; worst image {100 * self.worst_image_agreement:.2f}%)"
        ]
        if self.miou_reference is not None and self.miou_quantized is not None:
            delta = 100 * (self.miou_quantized - self.miou_reference)
            out.append(
                f"mIoU: fp32 {100 * self.miou_reference:.2f}, quantized {100 * self.miou_quantized:.2f} "
                f"({delta:+.2f} points)"
            )
        if self.calibration_images is not None:
            out.append(f"calibrated on {self.calibration_images} images")
        if self.range_coverage is not None:
            out.append(f"calibrated ranges cover {100 * self.range_coverage:.1f}% of the quantized tensors here")
        out += [f"warning: {w}" for w in self.warnings]
        return out


def _predictions(model: Any, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(x).argmax(1).cpu()


Ranges = dict[str, tuple[float, float]]


def range_overshoots(calibrated: Ranges, seen: Ranges) -> dict[str, float]:
    """How far each tensor's values in ``seen`` go beyond its ``calibrated`` range, in units of that range."""
    out = {}
    for name, (low, high) in calibrated.items():
        if name not in seen:
            continue
        width = max(high - low, 1e-12)
        s_low, s_high = seen[name]
        out[name] = max(0.0, (low - s_low) / width, (s_high - high) / width)
    return out


class _Ranges:
    """The activation ranges of the report's images, collected as they stream by (int8 fast paths only)."""

    def __init__(self, fast: Any, enabled: bool) -> None:
        self.calibrated = getattr(fast, "calibration_ranges", None) if enabled else None
        folded = getattr(fast, "folded_model", None)
        self.collector = RangeCollector(dynamic_graph(folded)) if self.calibrated and folded is not None else None

    def add(self, x: torch.Tensor) -> None:
        if self.collector is not None:
            self.collector.add(x)

    def judge(self, report: QuantizationReport) -> None:
        """Compare the ranges seen with the calibrated ones; a warning when many tensors leave theirs."""
        if self.collector is None:
            return
        overshoots = range_overshoots(self.calibrated, range_table(self.collector.ranges()))
        if not overshoots:
            return
        report.range_coverage = sum(v <= RANGE_SLACK for v in overshoots.values()) / len(overshoots)
        report.worst_tensors = sorted(overshoots.items(), key=lambda kv: -kv[1])[:5]
        if report.range_coverage < MIN_RANGE_COVERAGE:
            share = 100 * (1 - report.range_coverage)
            report.warnings.append(
                f"{share:.0f}% of the quantized tensors leave their calibrated range on these images: "
                "the calibration images are unlike these (calibrate on images like the data)"
            )


_NO_MASK = object()


def _pairs(images: Iterable[Any], masks: Iterable[np.ndarray] | None) -> Iterator[tuple[Any, Any]]:
    """(image, mask or None) pairs, one at a time; a count mismatch is an error once it shows."""
    if masks is None:
        yield from ((image, None) for image in images)
        return
    count = 0
    for count, (image, mask) in enumerate(itertools.zip_longest(images, masks, fillvalue=_NO_MASK), 1):
        if image is _NO_MASK or mask is _NO_MASK:
            raise ArgumentError("masks", f"one mask per image: the counts differ from item {count} on")
        yield image, mask


def quantization_report(
    model: Any,
    fast: Any,
    images: Iterable[np.ndarray | torch.Tensor],
    masks: Iterable[np.ndarray] | None = None,
    *,
    num_classes: int | None = None,
    check_ranges: bool = True,
) -> QuantizationReport:
    """Pixel agreement of a lower-precision model with the fp32 model, and the mIoU of both where masks are given.

    The images (and masks) are read one at a time as the iterables yield them, so a generator over a dataset's
    split keeps memory independent of the split's size.

    Args:
        model: the fp32 model (any callable from ``N×3×H×W`` RGB in 0..1 to logits).
        fast: the lower-precision model (an :class:`~zoo.infer.optimize.OptimizedModel`, or any such callable).
        images: ``H×W×3`` uint8 RGB images, or tensors of RGB in 0..1 (``3×H×W`` or ``1×3×H×W``).
        masks: the ground truth of each image (``H×W`` class indices, 255 = ignore), or None.
        num_classes: classes for the mIoU (default: the logits' channel count).
        check_ranges: for an int8 model, also compare the activation ranges of these images with the calibrated
            ones (one more pass of the fp32 graph over each image, as it streams by).

    Raises:
        ArgumentError: no images, or not one mask per image.
        ValueError: a mask that differs in size from its image.
    """
    return _report(model, fast, _pairs(images, masks), num_classes, check_ranges)


def _report(
    model: Any, fast: Any, pairs: Iterable[tuple[Any, Any]], num_classes: int | None, check_ranges: bool
) -> QuantizationReport:
    """:func:`quantization_report` over (image, mask or None) pairs, one at a time."""
    ranges = _Ranges(fast, check_ranges)
    agree = total = count = 0
    worst = 1.0
    metrics: list[Any] = []
    for image, mask in pairs:
        x = image_tensor(image)
        with torch.inference_mode():
            logits = model(x)
        reference, quantized = logits.argmax(1).cpu(), _predictions(fast, x)
        same = int((reference == quantized).sum())
        agree, total, count = agree + same, total + reference.numel(), count + 1
        worst = min(worst, same / reference.numel())
        if mask is not None:
            target = np.asarray(mask)
            if target.size != reference.numel():
                raise ValueError(f"mask {count} has shape {target.shape}, its image {tuple(reference.shape[-2:])}")
            target = torch.from_numpy(target.astype(np.int64)).reshape(reference.shape)
            if not metrics:
                classes = num_classes or int(logits.shape[1])
                metrics = [confusion_matrix_metric(classes, IGNORE_INDEX) for _ in range(2)]
            metrics[0].update(reference, target)
            metrics[1].update(quantized, target)
        ranges.add(x)
    if not count:
        raise ArgumentError("images", "quantization_report needs at least one image")
    report = QuantizationReport(count, total, agree / total, worst)
    if metrics:
        report.miou_reference, report.miou_quantized = (scores_from_confusion(m.compute()).miou for m in metrics)
    _judge(report, fast, ranges)
    return report


def _judge(report: QuantizationReport, fast: Any, ranges: _Ranges) -> None:
    """Fill the calibration fields and the warnings."""
    report.calibration_images = getattr(fast, "calibration_images", None)
    if report.calibration_images is not None and report.calibration_images < MIN_CALIBRATION_IMAGES:
        report.warnings.append(
            f"calibrated on only {report.calibration_images} images (fewer than {MIN_CALIBRATION_IMAGES}): "
            "ranges from so few images may not cover the data"
        )
    ranges.judge(report)
    if report.pixel_agreement < 0.99:
        report.warnings.append(f"pixel agreement with fp32 is {100 * report.pixel_agreement:.2f}%, below 99%")
    if report.miou_reference is not None and report.miou_reference - report.miou_quantized > 0.01:
        drop = 100 * (report.miou_reference - report.miou_quantized)
        report.warnings.append(f"the mIoU drops by {drop:.2f} points, more than 1")


def predictor_report(predictor: Any, dataset: Any) -> QuantizationReport:
    """:func:`quantization_report` of a fast-path predictor (``Predictor.from_checkpoint(..., fast=True)``) on a
    dataset whose items are ``dict(image=H×W×3 uint8, mask=H×W)``, at one scale without flip; the items are read
    one at a time.

    Raises:
        ValueError: the predictor has no fast path, or the dataset is empty.
    """
    lazy = predictor.model
    if not hasattr(lazy, "optimized"):
        raise ArgumentError("predictor", "has no fast path (Predictor.from_checkpoint(..., fast=True))")
    if len(dataset) == 0:
        raise ArgumentError("dataset", "is empty")
    if lazy.optimized is None:
        lazy(image_tensor(dataset[0]["image"]).to(predictor.device))
    items = (dataset[index] for index in range(len(dataset)))
    pairs = ((item["image"], item["mask"]) for item in items)
    return _report(lazy.model, lazy.optimized, pairs, predictor.num_classes, check_ranges=True)


__all__ = ["QuantizationReport", "predictor_report", "quantization_report", "range_overshoots"]
