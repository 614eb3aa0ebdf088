"""The shared base of the file-based datasets: a checked list of (image, mask) files, class lists, mask values.

Reading an item maps the stored mask values to class ids (``mask_values``, MMSegmentation's ``reduce_zero_label``)
and checks them: a mask that holds colours or values outside ``{0..C-1, ignore}`` is an error naming the file;
nothing is resized, remapped or dropped silently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from zoo.data.io import IGNORE_INDEX, read_image, read_mask, voc_palette

LOSSY_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif")  # mask formats whose compression changes labels


def check_mask_values(mask: np.ndarray, num_classes: int, path: str | Path, ignore_index: int = IGNORE_INDEX) -> None:
    """Raise if ``mask`` holds values outside ``{0..num_classes-1, ignore_index}`` (a colour or interpolated mask).

    Args:
        mask: H×W class ids.
        num_classes: number of classes.
        path: the mask's file, named in the error.
        ignore_index: the ignore value.
    """
    values = np.unique(mask)
    bad = values[(values >= num_classes) & (values != ignore_index)]
    if bad.size:
        shown = ", ".join(str(v) for v in bad[:10]) + (", ..." if bad.size > 10 else "")
        raise ValueError(
            f"mask {path}: values {shown} outside {{0..{num_classes - 1}, {ignore_index}}} ({num_classes} classes); "
            "a colour or interpolated (resized) mask, or one that needs mask_values / reduce_zero_label?"
        )


def remap_labels(
    mask: np.ndarray,
    mask_values: dict[int, int] | None = None,
    reduce_zero_label: bool = False,
    ignore_index: int = IGNORE_INDEX,
) -> np.ndarray:
    """Stored mask values to class ids: ``mask_values`` first (e.g. ``{255: 1}`` for 0/255 binary masks), then
    MMSegmentation's ``reduce_zero_label`` (0 becomes ``ignore_index``, every other id ``v`` becomes ``v - 1``).

    Args:
        mask: H×W stored values (uint8).
        mask_values: stored value -> class id (or ``ignore_index``); values not listed stay as they are.
        reduce_zero_label: label 0 is "unlabelled" (ADE20K's convention).
        ignore_index: the ignore value.
    """
    if mask_values:
        lut = np.arange(256, dtype=np.int64)
        for source, target in mask_values.items():
            lut[int(source)] = int(target)
        mask = lut[mask]
    if reduce_zero_label:
        mask = np.where(mask == 0, ignore_index, np.where(mask == ignore_index, ignore_index, mask - 1))
    return mask.astype(np.uint8) if mask.max(initial=0) < 256 else mask


def read_lines(path: Path, what: str) -> list[str]:
    """Non-empty stripped lines of a text file, less ``# comment`` lines and a UTF-8 byte-order mark (as Windows
    editors write); a missing or empty file is an error naming it.

    Args:
        path: text file.
        what: what the file holds, for the messages ("split list", "class list").
    """
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines:
        raise ValueError(f"{what} {path} is empty")
    return lines


def require_dir(path: Path, what: str) -> Path:
    """Return ``path`` if it is a folder, else raise FileNotFoundError naming it and ``what`` it should hold."""
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


class SegmentationFiles(Dataset):
    """Base of the file-based datasets: a list of ``(name, image file, mask file)`` read on access.

    Every listed file must exist when the dataset is built (the error names the first missing one). Reading an
    item maps the stored mask values to class ids (``mask_values``, ``reduce_zero_label``) and checks that image
    and mask have the same size and that the mask values lie in ``{0..C-1, ignore_index}``.

    Args:
        samples: ``(name, image path, mask path)`` per item, in order.
        classes: class names (train id order).
        palette: RGB colour per class.
        transform: albumentations Compose (or a callable taking ``image=``, ``mask=`` and returning a dict).
        source: what the list came from, named in the error when it is empty.
        ignore_index: the mask value left out of training and evaluation.
        reduce_zero_label: stored label 0 means "unlabelled" (becomes ``ignore_index``; other ids shift down by 1).
        mask_values: stored mask value -> class id, e.g. ``{255: 1}`` for binary masks stored as 0/255.
    """

    def __init__(
        self,
        samples: Sequence[tuple[str, Path, Path]],
        classes: Sequence[str],
        palette: Sequence[Sequence[int]],
        transform: Callable[..., dict[str, Any]] | None = None,
        source: str = "",
        ignore_index: int = IGNORE_INDEX,
        reduce_zero_label: bool = False,
        mask_values: dict[int, int] | None = None,
    ) -> None:
        if not samples:
            raise ValueError(f"{type(self).__name__}: no images in {source}")
        if len(palette) != len(classes):
            raise ValueError(f"palette has {len(palette)} colours for {len(classes)} classes")
        for _, image_path, mask_path in samples:
            if Path(mask_path).suffix.lower() in LOSSY_SUFFIXES:
                raise ValueError(
                    f"mask {mask_path} is a JPEG: its lossy compression turns pixels along edges into other class "
                    "ids; save masks as PNG"
                )
            for path, what in ((image_path, "image"), (mask_path, "mask")):
                if not Path(path).is_file():
                    raise FileNotFoundError(f"{what} file not found: {path} (listed in {source})")
        self.samples = [(name, Path(image), Path(mask)) for name, image, mask in samples]
        self.classes = list(classes)
        self.palette = [tuple(int(v) for v in colour) for colour in palette]
        self.num_classes = len(self.classes)
        self.transform = transform
        self.ignore_index = int(ignore_index)
        self.reduce_zero_label = bool(reduce_zero_label)
        self.mask_values = {int(k): int(v) for k, v in (mask_values or {}).items()}

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def names(self) -> list[str]:
        """Item names (ids), in order."""
        return [name for name, _, _ in self.samples]

    def load_mask(self, path: Path) -> np.ndarray:
        """Train ids of one mask file (subclasses map dataset-specific label ids here)."""
        return read_mask(path)

    def load(self, index: int) -> dict[str, Any]:
        """Image, mask and name of item ``index``, checked, without the transform."""
        name, image_path, mask_path = self.samples[index]
        image = read_image(image_path)
        mask = remap_labels(self.load_mask(mask_path), self.mask_values, self.reduce_zero_label, self.ignore_index)
        if image.shape[:2] != mask.shape:
            raise ValueError(
                f"image {image_path} is {image.shape[1]}x{image.shape[0]} but mask {mask_path} is "
                f"{mask.shape[1]}x{mask.shape[0]} (width x height)"
            )
        check_mask_values(mask, self.num_classes, mask_path, self.ignore_index)
        return {"image": image, "mask": mask, "name": name}

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        item = self.load(index)
        if self.transform is not None:
            out = self.transform(image=item["image"], mask=item["mask"])
            item["image"], item["mask"] = out["image"], torch.as_tensor(out["mask"]).long()
        return item


def resolve_classes(
    classes: Sequence[str] | None,
    palette: Sequence[Sequence[int]] | None,
    classes_file: Path,
    default: Sequence[str] | None,
) -> tuple[list[str], list[tuple[int, int, int]]]:
    """Class names and palette: ``classes`` if given, else ``classes_file`` if present, else ``default``.

    Args:
        classes: class names given by the caller.
        palette: colours given by the caller (default: the VOC colour map).
        classes_file: text file with one class name per line.
        default: class names when neither is given (None: one of them is required).
    """
    if classes is not None:
        names = list(classes)
    elif classes_file.is_file():
        names = read_lines(classes_file, "class list")
    elif default is not None:
        names = list(default)
    else:
        raise FileNotFoundError(f"no class list: pass classes=[...] or write one name per line to {classes_file}")
    if not names:
        raise ValueError("classes is empty")
    if len(names) > 255:
        raise ValueError(f"{len(names)} classes do not fit uint8 masks with 255 = ignore")
    if palette is None:
        colours = voc_palette(len(names))
    else:
        colours = [tuple(int(v) for v in c) for c in palette]
        if len(colours) != len(names):
            raise ValueError(f"palette has {len(colours)} colours for {len(names)} classes")
    return names, colours


__all__ = [
    "LOSSY_SUFFIXES",
    "SegmentationFiles",
    "check_mask_values",
    "read_lines",
    "remap_labels",
    "require_dir",
    "resolve_classes",
]
