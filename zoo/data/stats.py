"""Class statistics of a dataset split and class weights from them (median-frequency balancing).

Median-frequency balancing (Eigen and Fergus, ICCV 2015, as SegNet uses it): the frequency of class ``c`` is its
pixel count divided by the pixel count of the images in which ``c`` appears, and its weight is
``median(frequencies) / frequency(c)``; a class that never appears gets weight 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from zoo.data.io import IGNORE_INDEX


@dataclass(frozen=True)
class ClassStats:
    """Per-class counts of one split.

    Attributes:
        pixels: labelled pixels of each class.
        images: images in which each class appears.
        image_pixels: labelled pixels of the images in which each class appears.
        ignored: pixels labelled with the ignore value.
        num_images: images read.
    """

    pixels: np.ndarray
    images: np.ndarray
    image_pixels: np.ndarray
    ignored: int
    num_images: int

    @property
    def pixel_share(self) -> np.ndarray:
        """Each class's share of the labelled pixels."""
        return self.pixels / max(1, int(self.pixels.sum()))

    def median_frequency_weights(self) -> np.ndarray:
        """Median-frequency balancing weights (0 for classes that never appear)."""
        present = self.image_pixels > 0
        freq = np.zeros(len(self.pixels))
        freq[present] = self.pixels[present] / self.image_pixels[present]
        weights = np.zeros(len(self.pixels))
        if present.any():
            weights[present] = np.median(freq[present]) / np.maximum(freq[present], 1e-12)
        return weights


def class_stats(dataset: Any, num_classes: int, ignore_index: int = IGNORE_INDEX) -> ClassStats:
    """Count every mask of a dataset (items ``dict(mask=H×W ids)``, read with its ``load`` when it has one).

    Args:
        dataset: a zoo dataset without transform.
        num_classes: number of classes; ids outside 0..num_classes-1 other than ``ignore_index`` are an error.
        ignore_index: the ignore value.

    Raises:
        ValueError: a mask holds an id that is neither a class nor the ignore value (names the item).
    """
    pixels = np.zeros(num_classes, np.int64)
    images = np.zeros(num_classes, np.int64)
    image_pixels = np.zeros(num_classes, np.int64)
    ignored = 0
    read = getattr(dataset, "load", dataset.__getitem__)
    for index in range(len(dataset)):
        item = read(index)
        mask = np.asarray(item["mask"]).astype(np.int64)
        ignored += int((mask == ignore_index).sum())
        labelled = mask[mask != ignore_index]
        if labelled.size and (labelled.min() < 0 or labelled.max() >= num_classes):
            bad = int(labelled.max() if labelled.max() >= num_classes else labelled.min())
            name = item.get("name", index)
            raise ValueError(f"{name}: mask value {bad} is not a class id (0..{num_classes - 1}) nor {ignore_index}")
        counts = np.bincount(labelled, minlength=num_classes)
        pixels += counts
        images += counts > 0
        image_pixels += np.where(counts > 0, labelled.size, 0)
    return ClassStats(pixels, images, image_pixels, ignored, len(dataset))


__all__ = ["ClassStats", "class_stats"]
