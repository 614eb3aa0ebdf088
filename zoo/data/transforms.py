"""Augmentation pipelines (albumentations 2.x, OpenCV) and dataloader worker seeding.

The training pipeline is DeepLab's: random scale, pad to the crop (image with 0, mask with the ignore value),
random crop, horizontal flip, then a float tensor in 0..1 (the model normalises its input itself). Pipelines are
built with ``strict=True``, so a misspelt or 1.x argument name (``value``/``mask_value`` instead of
``fill``/``fill_mask``) raises instead of being ignored.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from torch.utils.data import default_collate, get_worker_info

from zoo.data.io import IGNORE_INDEX


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = (int(v) for v in size)
    return height, width


def train_transform(
    crop_size: int | Sequence[int],
    scale: tuple[float, float] = (0.5, 2.0),
    hflip: bool = True,
    seed: int | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> A.Compose:
    """DeepLab's training augmentation.

    Args:
        crop_size: crop size, an int or (height, width).
        scale: range of the random scale factor (image bilinear, mask nearest).
        hflip: flip horizontally with probability 0.5.
        seed: seed of the pipeline's own random generator (albumentations 2.x ignores the global seeds);
            default: drawn from torch's global generator, so ``seed_everything`` makes it reproducible.
        ignore_index: the mask value of padded pixels.

    Returns:
        albumentations Compose ending in ToTensorV2 (image float C×H×W in 0..1, mask uint8 H×W).
    """
    height, width = _pair(crop_size)
    low, high = scale
    if not 0 < low <= high:
        raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {scale}")
    steps: list[A.BasicTransform] = [
        A.RandomScale(
            scale_limit=(low - 1.0, high - 1.0),
            interpolation=cv2.INTER_LINEAR,
            mask_interpolation=cv2.INTER_NEAREST,
            p=1.0,
        ),
        A.PadIfNeeded(
            min_height=height,
            min_width=width,
            position="top_left",
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            fill_mask=ignore_index,
        ),
        A.RandomCrop(height=height, width=width),
    ]
    if hflip:
        steps.append(A.HorizontalFlip(p=0.5))
    steps += [A.ToFloat(max_value=255.0), ToTensorV2()]
    if seed is None:
        seed = int(torch.randint(0, 2**31 - 1, ()).item())
    return A.Compose(steps, strict=True, seed=seed)


def eval_transform() -> A.Compose:
    """No resize: the image as a float tensor in 0..1, the mask as a tensor."""
    return A.Compose([A.ToFloat(max_value=255.0), ToTensorV2()], strict=True, seed=0)


def _transforms_of(dataset: object) -> list[object]:
    """The ``transform`` attributes of a dataset and of the datasets it wraps (Subset, ConcatDataset)."""
    found = [getattr(dataset, "transform", None)]
    inner = getattr(dataset, "dataset", None)
    if inner is not None:
        found += _transforms_of(inner)
    for part in getattr(dataset, "datasets", None) or []:
        found += _transforms_of(part)
    return [t for t in found if t is not None]


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn`` for DataLoader: seeds ``random``, numpy and the dataset's albumentations pipeline.

    Each worker starts with torch seed ``base_seed + worker_id``, where ``base_seed`` is drawn from the main
    process's torch generator for every new iterator; so workers differ from each other and from epoch to epoch,
    and a run is reproducible from the global seed. Lightning's ``seed_everything(workers=True)`` seeds torch,
    ``random`` and numpy in the workers but not albumentations 2.x, whose Compose keeps its own generator (a
    forked worker would copy the parent's state, giving every worker the same augmentations); this function
    seeds that generator too.

    Args:
        worker_id: the worker's index (unused: the per-worker torch seed already includes it).
    """
    del worker_id
    info = get_worker_info()
    seed = (info.seed if info is not None else torch.initial_seed()) % 2**32
    random.seed(seed)
    np.random.seed(seed)
    if info is not None:
        for transform in _transforms_of(info.dataset):
            if hasattr(transform, "set_random_seed"):
                transform.set_random_seed(seed)


class PadCollate:
    """Collate items of different sizes: images padded with 0 and masks with the ignore value at the bottom and right
    to the largest height and width of the batch, so ``val_batch_size > 1`` works on full-resolution images. Each
    item's own size is kept in ``"size"`` (``N×2``, height and width): the training module runs a smaller image at
    its own size, so the padding never reaches the model and scores do not depend on the batch size.

    Args:
        ignore_index: the mask value of padded pixels.
    """

    def __init__(self, ignore_index: int = IGNORE_INDEX) -> None:
        self.ignore_index = ignore_index

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        height = max(int(item["image"].shape[-2]) for item in items)
        width = max(int(item["image"].shape[-1]) for item in items)
        images, masks = [], []
        for item in items:
            pad = (0, width - item["image"].shape[-1], 0, height - item["image"].shape[-2])
            images.append(torch.nn.functional.pad(item["image"], pad, value=0.0))
            masks.append(torch.nn.functional.pad(item["mask"], pad, value=self.ignore_index))
        rest = {k: default_collate([item[k] for item in items]) for k in items[0] if k not in ("image", "mask")}
        sizes = torch.tensor([tuple(item["image"].shape[-2:]) for item in items])
        return {"image": torch.stack(images), "mask": torch.stack(masks), "size": sizes, **rest}


__all__ = ["PadCollate", "eval_transform", "seed_worker", "train_transform"]
