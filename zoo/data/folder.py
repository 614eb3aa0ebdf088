"""``folder``: a user's own images and masks.

Layout (masks are PNGs of class ids, palette or grayscale, 255 = ignore; stems match the images')::

    root/classes.txt                 one class name per line (or pass classes=[...])
    root/images/<stem>.<jpg|png|...>  (img_dir, img_suffix)
    root/masks/<stem>.png            (ann_dir, seg_map_suffix)
    root/splits/<split>.txt          optional: one stem per line

A split is read from ``root/splits/<split>.txt`` when that file exists, else from the folders
``root/images/<split>/`` and ``root/masks/<split>/``; ``split=None`` takes every image directly in ``root/images/``.
Masks stored in another convention are mapped on reading: ``mask_values={255: 1}`` for binary masks stored as
0/255, ``reduce_zero_label=True`` when 0 means "unlabelled", ``ignore_index`` for another ignore value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from zoo.data.files import SegmentationFiles, read_lines, require_dir, resolve_classes
from zoo.data.io import IGNORE_INDEX, IMAGE_SUFFIXES


def _images_by_stem(folder: Path, suffix: str | None = None) -> dict[str, Path]:
    """Image files directly in ``folder`` by stem (the name less ``suffix`` when given, else less its extension);
    two images with one stem are an error."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if suffix is not None:
            if not (path.is_file() and path.name.endswith(suffix)):
                continue
            stem = path.name[: -len(suffix)]
        elif path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            stem = path.stem
        else:
            continue
        if stem in found:
            raise ValueError(f"folder: two images with the stem {stem!r}: {found[stem]} and {path}")
        found[stem] = path
    return found


class FolderDataset(SegmentationFiles):
    """Images and masks with matching stems, and a class list.

    Args:
        root: folder holding ``images/``, ``masks/`` and (unless ``classes`` is given) ``classes.txt``.
        split: a split name (``splits/<split>.txt`` or ``images/<split>/``), or None for all of ``images/``.
        transform: albumentations Compose (or callable taking ``image=``, ``mask=``) applied to each item.
        classes: class names in id order (default: ``root/classes.txt``).
        palette: RGB colour per class (default: the VOC colour map).
        img_dir: the image folder's name under ``root``.
        ann_dir: the mask folder's name under ``root``.
        img_suffix: only images whose name ends with this (default: any image extension), MMSegmentation's option.
        seg_map_suffix: a mask's name is the image's stem (less ``img_suffix``) plus this.
        ignore_index: the mask value left out of training and evaluation.
        reduce_zero_label: stored 0 means "unlabelled" (becomes ``ignore_index``; other ids shift down by 1).
        mask_values: stored mask value -> class id, e.g. ``{255: 1}`` for binary masks stored as 0/255.
    """

    def __init__(
        self,
        root: str | Path,
        split: str | None = "train",
        transform: Callable[..., dict[str, Any]] | None = None,
        classes: Sequence[str] | None = None,
        palette: Sequence[Sequence[int]] | None = None,
        img_dir: str = "images",
        ann_dir: str = "masks",
        img_suffix: str | None = None,
        seg_map_suffix: str = ".png",
        ignore_index: int = IGNORE_INDEX,
        reduce_zero_label: bool = False,
        mask_values: dict[int, int] | None = None,
    ) -> None:
        self.root = require_dir(Path(root), "folder root")
        self.split = split
        names, colours = resolve_classes(classes, palette, self.root / "classes.txt", None)
        image_dir = require_dir(self.root / img_dir, "image folder")
        mask_dir = self.root / ann_dir
        list_file = self.root / "splits" / f"{split}.txt"
        if split is not None and list_file.is_file():
            images = _images_by_stem(image_dir, img_suffix)
            samples = []
            for stem in read_lines(list_file, "split list"):
                if stem not in images:
                    raise FileNotFoundError(f"image file not found: {image_dir / stem}.* (listed in {list_file})")
                samples.append((stem, images[stem], mask_dir / f"{stem}{seg_map_suffix}"))
            source = str(list_file)
        else:
            if split is not None:
                if not (image_dir / split).is_dir():
                    raise FileNotFoundError(
                        f"folder: split {split!r} not found: neither {list_file} nor the folder {image_dir / split}"
                    )
                image_dir, mask_dir = image_dir / split, mask_dir / split
            images = _images_by_stem(image_dir, img_suffix)
            samples = [(s, p, mask_dir / f"{s}{seg_map_suffix}") for s, p in images.items()]
            source = str(image_dir)
        super().__init__(samples, names, colours, transform, source, ignore_index, reduce_zero_label, mask_values)

    @classmethod
    def find_splits(cls, root: str | Path, img_dir: str = "images", **_: Any) -> list[str | None]:
        """Splits present under ``root``: ``splits/*.txt`` and ``<img_dir>/<split>/`` folders, else [None] (all
        images).

        Args:
            root: the dataset folder.
            img_dir: the image folder's name under ``root``.
        """
        root = Path(root)
        found = {p.stem for p in (root / "splits").glob("*.txt")}
        found |= {p.name for p in (root / img_dir).glob("*") if p.is_dir()}
        return sorted(found) or [None]


__all__ = ["FolderDataset", "IMAGE_SUFFIXES"]
