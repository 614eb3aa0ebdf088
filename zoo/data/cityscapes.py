"""``cityscapes``: Cityscapes fine annotations, 19 train classes.

``root`` holds ``leftImg8bit/<split>/<city>/<frame>_leftImg8bit.png`` and
``gtFine/<split>/<city>/<frame>_gtFine_labelTrainIds.png`` (used when present) or
``<frame>_gtFine_labelIds.png``, whose ids (0..33, and the licence plate's -1, stored as 255 in a uint8 PNG)
are mapped to the 19 train ids by the official table; every other id becomes 255 (ignore).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from zoo.data.files import SegmentationFiles, require_dir
from zoo.data.io import IGNORE_INDEX, read_mask

CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)
CITYSCAPES_PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128),
    (244, 35, 232),
    (70, 70, 70),
    (102, 102, 156),
    (190, 153, 153),
    (153, 153, 153),
    (250, 170, 30),
    (220, 220, 0),
    (107, 142, 35),
    (152, 251, 152),
    (70, 130, 180),
    (220, 20, 60),
    (255, 0, 0),
    (0, 0, 142),
    (0, 0, 70),
    (0, 60, 100),
    (0, 80, 100),
    (0, 0, 230),
    (119, 11, 32),
)
# Official table (cityscapesScripts labels.py): label id -> train id for the 19 evaluated classes.
TRAIN_IDS: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
NUM_LABEL_IDS = 34  # ids 0..33; -1 (licence plate) is 255 in the uint8 PNGs


def _label_lut() -> np.ndarray:
    lut = np.full(256, IGNORE_INDEX, np.uint8)
    for label_id, train_id in TRAIN_IDS.items():
        lut[label_id] = train_id
    return lut


LABEL_TO_TRAIN: np.ndarray = _label_lut()


def label_ids_to_train_ids(label_ids: np.ndarray, path: str | Path = "<array>") -> np.ndarray:
    """Map Cityscapes label ids to the 19 train ids (every id without a train id, and -1, → 255).

    Args:
        label_ids: H×W label ids (uint8 with -1 stored as 255, or a signed integer array holding -1).
        path: the file they came from, named in the error.

    Raises:
        ValueError: values that are not Cityscapes label ids (outside 0..33 and -1).
    """
    ids = np.asarray(label_ids).astype(np.int64)
    ids = np.where(ids == -1, 255, ids)
    bad = np.unique(ids[((ids >= NUM_LABEL_IDS) & (ids != 255)) | (ids < 0)])
    if bad.size:
        raise ValueError(f"labelIds mask {path}: values {bad[:10].tolist()} are not Cityscapes label ids (0..33, -1)")
    return LABEL_TO_TRAIN[ids]


class Cityscapes(SegmentationFiles):
    """Cityscapes with fine annotations, 19 classes, official palette.

    Args:
        root: folder holding ``leftImg8bit/`` and ``gtFine/``.
        split: "train", "val" or "test" (any folder under ``leftImg8bit/``).
        transform: albumentations Compose (or callable taking ``image=``, ``mask=``) applied to each item.
    """

    classes: list[str] = list(CITYSCAPES_CLASSES)
    palette: list[tuple[int, int, int]] = list(CITYSCAPES_PALETTE)
    num_classes: int = len(CITYSCAPES_CLASSES)
    splits: tuple[str, ...] = ("train", "val", "test")

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: Callable[..., dict[str, Any]] | None = None,
    ) -> None:
        self.root = require_dir(Path(root), "cityscapes root")
        self.split = split
        image_dir = require_dir(self.root / "leftImg8bit" / split, f"cityscapes split {split!r}")
        samples = []
        for image in sorted(image_dir.glob("*/*_leftImg8bit.png")):
            frame = image.name[: -len("_leftImg8bit.png")]
            gt = self.root / "gtFine" / split / image.parent.name
            mask = gt / f"{frame}_gtFine_labelTrainIds.png"
            if not mask.is_file():
                mask = gt / f"{frame}_gtFine_labelIds.png"
            samples.append((frame, image, mask))
        super().__init__(samples, CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, transform, f"{image_dir}/*/*_leftImg8bit.png")

    def load_mask(self, path: Path) -> np.ndarray:
        mask = read_mask(path)
        return mask if path.name.endswith("_labelTrainIds.png") else label_ids_to_train_ids(mask, path)

    @classmethod
    def find_splits(cls, root: str | Path, **_: Any) -> list[str]:
        """Split folders present under ``root/leftImg8bit``.

        Args:
            root: folder holding ``leftImg8bit/`` and ``gtFine/``.
        """
        return sorted(p.name for p in (Path(root) / "leftImg8bit").glob("*") if p.is_dir())


__all__ = ["CITYSCAPES_CLASSES", "CITYSCAPES_PALETTE", "Cityscapes", "TRAIN_IDS", "label_ids_to_train_ids"]
