"""``shapes``: synthetic segmentation data that needs no download.

Each image holds a few filled shapes (circle, square, triangle, star) on a textured, noisy
background. A thin band along every shape outline is marked 255 (ignore), as VOC marks its object
boundaries. Everything is drawn from ``numpy.random.default_rng((seed, split, index))``, so an
item depends only on the seed, the split and its index (not on workers or the order of reads).

``ShapesDataset`` draws items in memory; ``write_shapes`` writes the same images in Pascal VOC
layout (``JPEGImages/``, palette PNGs in ``SegmentationClass/``, ``ImageSets/Segmentation/``, and
``classes.txt``) so that the file readers can be trained on them. It writes only into a new or empty folder or
one it wrote before (marked by the file ``.zoo-shapes``), so a real dataset root is never overwritten.
``ShapesVOC`` (``shapes-voc``) reads those files with the ``voc`` reader and writes them when missing (its
``prepare``: ``data.prepare`` in a training config).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from zoo.data.voc import VOCSegmentation
from zoo.errors import ArgumentError

SHAPES_CLASSES: tuple[str, ...] = ("background", "circle", "square", "triangle", "star")
SHAPES_PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),
    (128, 0, 0),
    (0, 128, 0),
    (128, 128, 0),
    (0, 0, 128),
)
SPLITS: dict[str, int] = {"train": 0, "val": 1, "test": 2}
DEFAULT_NUM_IMAGES: dict[str, int] = {"train": 200, "val": 40, "test": 40}
MARKER = ".zoo-shapes"  # written first into every folder write_shapes fills: the folder is the zoo's own

# Base fill colour of each foreground class (RGB); each shape jitters it.
_FILL = {1: (220, 60, 50), 2: (60, 190, 70), 3: (60, 90, 220), 4: (230, 200, 40)}


def draw_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth random colour field with a faint stripe pattern, float32 H×W×3 in 0..255."""
    grid = rng.uniform(70, 170, size=(4, 4, 3)).astype(np.float32)
    field = cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle, period = rng.uniform(0, np.pi), rng.uniform(6, 20)
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    return field + rng.uniform(5, 20) * stripes[..., None]


def polygon_points(kind: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """Vertices (int32 N×2) of a square (2), triangle (3) or five-pointed star (4)."""
    if kind == 2:
        t = angle + np.pi / 4 + np.arange(4) * np.pi / 2
        radii = np.full(4, r)
    elif kind == 3:
        t = angle + np.arange(3) * 2 * np.pi / 3
        radii = np.full(3, r * 1.15)
    else:
        t = angle + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, r * 1.2, r * 0.5)
    points = np.stack([cx + radii * np.cos(t), cy + radii * np.sin(t)], axis=1)
    return np.round(points).astype(np.int32)


def make_shapes_item(seed: int, split: str, index: int, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Draw one image and its mask.

    Args:
        seed: data seed.
        split: "train", "val" or "test" (each split draws different images).
        index: item index within the split.
        size: height and width in pixels.

    Returns:
        image (size×size×3 uint8 RGB) and mask (size×size uint8: class ids, 255 on outlines).
    """
    if split not in SPLITS:
        raise ValueError(f"shapes: unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    if size < 32:
        raise ValueError(f"shapes: size must be at least 32 pixels, got {size}")
    rng = np.random.default_rng((seed, SPLITS[split], index))
    image = draw_background(rng, size)
    mask = np.zeros((size, size), np.uint8)
    for _ in range(rng.integers(1, 5)):
        kind = int(rng.integers(1, len(SHAPES_CLASSES)))
        r = rng.uniform(0.09, 0.2) * size
        cx, cy = rng.uniform(r, size - r, size=2)
        colour = np.clip(np.array(_FILL[kind]) + rng.uniform(-35, 35, size=3), 0, 255)
        region = np.zeros((size, size), np.uint8)
        if kind == 1:
            cv2.circle(region, (round(cx), round(cy)), round(r), 1, thickness=-1, lineType=cv2.LINE_8)
        else:
            cv2.fillPoly(region, [polygon_points(kind, cx, cy, r, rng.uniform(0, 2 * np.pi))], 1, lineType=cv2.LINE_8)
        inside = region.astype(bool)
        image[inside] = colour + rng.normal(0, 6, size=(int(inside.sum()), 3))
        mask[inside] = kind
    outline = cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    image += rng.normal(0, rng.uniform(4, 12), size=image.shape)
    mask[outline] = 255
    return np.clip(image, 0, 255).astype(np.uint8), mask


class ShapesDataset(Dataset):
    """Synthetic shapes drawn in memory (no files), deterministic per seed.

    Use ``write_shapes`` to put the same data on disk in VOC layout; the ``voc`` and ``folder``
    readers then read it with this dataset's class names (``classes.txt``).

    Args:
        root: unused place-holder so the dataset builds like the file-based ones; must be None.
        split: "train", "val" or "test".
        transform: albumentations Compose (or callable taking ``image=``, ``mask=``) applied to each item.
        num_images: number of items (default 200 for train, 40 for val and test).
        size: image height and width in pixels (default: ``default_size``, 128).
        seed: data seed; the same seed, split and index always give the same item.
    """

    default_size: int = 128
    classes: list[str] = list(SHAPES_CLASSES)
    palette: list[tuple[int, int, int]] = list(SHAPES_PALETTE)
    num_classes: int = len(SHAPES_CLASSES)
    ignore_index: int = 255

    def __init__(
        self,
        root: str | Path | None = None,
        split: str = "train",
        transform: Any = None,
        num_images: int | None = None,
        size: int | None = None,
        seed: int = 0,
    ) -> None:
        if root is not None:
            raise ValueError(
                f"shapes: root={str(root)!r} given, but the shapes dataset is drawn in memory; for its files use "
                "the 'shapes-voc' dataset (written into root by its prepare, or by zoo.data.shapes.write_shapes)"
            )
        if split not in SPLITS:
            raise ValueError(f"shapes: unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
        num_images = DEFAULT_NUM_IMAGES[split] if num_images is None else num_images
        if num_images < 1:
            raise ValueError(f"shapes: num_images must be positive, got {num_images}")
        self.split, self.transform, self.size, self.seed = split, transform, size or self.default_size, seed
        self.ids = [f"{split}_{i:05d}" for i in range(num_images)]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def names(self) -> list[str]:
        """Item names (ids), in order."""
        return list(self.ids)

    @classmethod
    def find_splits(cls, root: str | Path | None = None, **_: Any) -> list[str]:
        """The splits (drawn in memory: always ``train``, ``val`` and ``test``).

        Args:
            root: unused (None).
        """
        return list(SPLITS)

    def load(self, index: int) -> dict[str, Any]:
        """Image, mask and name of item ``index``, without the transform."""
        if not 0 <= index < len(self):
            raise IndexError(f"shapes: index {index} out of range for {len(self)} items")
        image, mask = self._draw(index)
        return {"image": image, "mask": mask, "name": self.ids[index]}

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.load(index)
        image, mask = item["image"], item["mask"]
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            item["image"], item["mask"] = out["image"], out["mask"].long()
        return item

    def _draw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return make_shapes_item(self.seed, self.split, index, self.size)


def shapes_root_state(root: str | Path) -> Literal["new", "ours", "foreign"]:
    """Whether ``write_shapes`` may write into ``root``.

    Returns:
        "new" (missing or empty folder), "ours" (it holds the marker file ``write_shapes`` writes first) or
        "foreign" (anything else: a user's folder, never written without ``force``).
    """
    root = Path(root)
    if (root / MARKER).is_file():
        return "ours"
    if not root.exists() or (root.is_dir() and not any(root.iterdir())):
        return "new"
    return "foreign"


def write_shapes(
    root: str | Path,
    num_train: int = 200,
    num_val: int = 40,
    seed: int = 0,
    size: int = 128,
    *,
    force: bool = False,
) -> Path:
    """Write the shapes data in Pascal VOC layout.

    Files: ``JPEGImages/<id>.jpg`` (quality 95, no chroma subsampling), ``SegmentationClass/<id>.png``
    (palette PNG: class ids, 255 on outlines), ``ImageSets/Segmentation/{train,val,trainval}.txt`` and
    ``classes.txt`` (one class name per line). The items are those of ``ShapesDataset`` with the same seed and size
    (up to JPEG compression of the images).

    Args:
        root: output folder: a new or empty folder, or one this function wrote before (its files of the same names
            are replaced).
        num_train: number of training images.
        num_val: number of validation images.
        seed: data seed.
        size: image height and width in pixels.
        force: also write into a non-empty folder that holds other files.

    Returns:
        ``root`` as a Path.

    Raises:
        ArgumentError: (a ValueError) naming ``root``, a non-empty folder this function did not write, when
            ``force`` is not set.
    """
    if num_train < 1 or num_val < 1:
        raise ValueError(f"write_shapes: num_train and num_val must be positive, got {num_train} and {num_val}")
    root = Path(root)
    if shapes_root_state(root) == "foreign" and not force:
        raise ArgumentError(
            "root",
            f"{str(root)!r} is not empty and holds no {MARKER} marker (it was not written by the zoo): not writing "
            "the shapes data into it; choose a new or empty folder, or pass force to overwrite",
            also=("force",),
        )
    root.mkdir(parents=True, exist_ok=True)
    args = {"num_train": num_train, "num_val": num_val, "seed": seed, "size": size}
    (root / MARKER).write_text(json.dumps(args) + "\n")  # claim the folder before writing anything else
    images, masks, lists = root / "JPEGImages", root / "SegmentationClass", root / "ImageSets" / "Segmentation"
    for folder in (images, masks, lists):
        folder.mkdir(parents=True, exist_ok=True)
    flat_palette = [c for colour in SHAPES_PALETTE for c in colour]
    flat_palette += [0, 0, 0] * (256 - len(SHAPES_PALETTE) - 1) + [224, 224, 192]  # 255: VOC's outline colour
    split_ids: dict[str, list[str]] = {}
    for split, count in (("train", num_train), ("val", num_val)):
        split_ids[split] = []
        for index in range(count):
            name = f"shapes_{split}_{index:05d}"
            image, mask = make_shapes_item(seed, split, index, size)
            Image.fromarray(image).save(images / f"{name}.jpg", quality=95, subsampling=0)
            label = Image.fromarray(mask, mode="P")
            label.putpalette(flat_palette)
            label.save(masks / f"{name}.png")
            split_ids[split].append(name)
    split_ids["trainval"] = split_ids["train"] + split_ids["val"]
    for split, names in split_ids.items():
        (lists / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    (root / "classes.txt").write_text("".join(f"{c}\n" for c in SHAPES_CLASSES))  # last: the data is complete
    return root


def ensure_shapes(root: str | Path, *, dry_run: bool = False, **kwargs: Any) -> bool:
    """Write the shapes data into ``root`` unless a complete copy is there; never into a folder of other files.

    Args:
        root: a new or empty folder, or one :func:`write_shapes` wrote.
        dry_run: only check ``root`` and the arguments; write nothing.
        **kwargs: arguments of :func:`write_shapes` (num_train, num_val, seed, size).

    Returns:
        True if the data was (or, with ``dry_run``, would be) written, False if ``root`` already holds it.

    Raises:
        ArgumentError: naming ``root``, which holds files the zoo did not write (it is left untouched).
        TypeError: an argument :func:`write_shapes` does not take.
    """
    inspect.signature(write_shapes).bind(root, **kwargs)  # a misspelt argument fails before anything is written
    root = Path(root)
    state = shapes_root_state(root)
    if state == "foreign":
        raise ArgumentError(
            "root",
            f"{str(root)!r} holds files the zoo did not write (no {MARKER} marker): the shapes data is written only "
            "into a new or empty folder or one the zoo wrote",
        )
    if state == "ours" and (root / "classes.txt").is_file():
        return False
    if not dry_run:
        write_shapes(root, **kwargs)
    return True


class ShapesVOC(VOCSegmentation):
    """``shapes-voc``: the shapes data as files in Pascal VOC layout, read by the ``voc`` reader and written by
    :meth:`prepare` (``data.prepare: {num_train: 300, ...}`` in a training config) when missing.

    Args:
        root: the folder :func:`write_shapes` wrote.
        split: "train", "val" or "trainval".
        transform: albumentations Compose (or callable taking ``image=``, ``mask=``) applied to each item.
    """

    classes: list[str] = list(SHAPES_CLASSES)
    palette: list[tuple[int, int, int]] = list(SHAPES_PALETTE)
    num_classes: int = len(SHAPES_CLASSES)
    splits: tuple[str, ...] = ("train", "val", "trainval")

    def __init__(self, root: str | Path, split: str = "train", transform: Any = None) -> None:
        super().__init__(root, split, transform, classes=self.classes, palette=self.palette)

    @classmethod
    def prepare(cls, root: str | Path, *, dry_run: bool = False, **kwargs: Any) -> bool:
        """Write the shapes data into ``root`` unless it is there (:func:`ensure_shapes`: the same arguments)."""
        return ensure_shapes(root, dry_run=dry_run, **kwargs)


__all__ = [
    "MARKER",
    "SHAPES_CLASSES",
    "SHAPES_PALETTE",
    "ShapesDataset",
    "ShapesVOC",
    "ensure_shapes",
    "make_shapes_item",
    "shapes_root_state",
    "write_shapes",
]
