"""``voc``: Pascal VOC 2012 in its VOCdevkit layout, and the SBD "aug" training set (``split="train_aug"``).

``root`` is the ``VOC2012`` folder::

    root/JPEGImages/<id>.jpg
    root/SegmentationClass/<id>.png           palette PNGs: class ids, 255 = boundary/ignore
    root/ImageSets/Segmentation/<split>.txt   train, val, trainval (any list there is a split)
    root/SegmentationClassAug/<id>.png        optional: the common SBD+VOC "aug" masks
    root/ImageSets/Segmentation/train_aug.txt optional: the aug list (ids, or "JPEG path  mask path" lines)

``train_aug`` (the 10,582 images of DeepLab's VOC-aug) takes its masks from, in this order:

1. ``sbd_root=`` (SBD's ``dataset`` folder with ``cls/<id>.mat``, ``train.txt``, ``val.txt``): VOC's own
   ``SegmentationClass/<id>.png`` where VOC has one, else SBD's ``cls/<id>.mat`` (``GTcls.Segmentation``);
   images from ``JPEGImages/`` (or SBD's ``img/`` for an id VOC lacks). List: SBD train ∪ SBD val ∪ VOC train.
2. otherwise ``root/SegmentationClassAug/<id>.png``. List: every mask there ∪ VOC train.

``train_aug.txt``, when present, replaces the list. VOC val is always removed from the list, so no
validation image is trained on.

A ``classes.txt`` in ``root`` (one name per line, as ``zoo data make-shapes`` writes) replaces VOC's 21 classes,
so the same reader serves any data written in VOC layout; ``classes=`` overrides both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zoo.data.files import SegmentationFiles, read_lines, require_dir, resolve_classes
from zoo.data.io import VOC_CLASSES, read_mask, voc_palette

LIST_DIR = Path("ImageSets") / "Segmentation"


def read_sbd_mat(path: str | Path) -> np.ndarray:
    """Class ids (H×W uint8) of an SBD ``cls/<id>.mat`` file (``GTcls.Segmentation``).

    Args:
        path: the .mat file.
    """
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mask file not found: {path}")
    try:
        mat = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)
        seg = np.asarray(mat["GTcls"].Segmentation)
    except Exception as exc:  # scipy raises many types for bad files
        raise ValueError(f"cannot read SBD mask {path}: expected GTcls.Segmentation in a .mat file ({exc})") from None
    if seg.ndim != 2 or seg.size == 0 or seg.min() < 0 or seg.max() > 255:
        raise ValueError(f"SBD mask {path}: GTcls.Segmentation must be a 2-D array of class ids, got shape {seg.shape}")
    return seg.astype(np.uint8)


def _list_ids(path: Path) -> list[str]:
    """Ids of a split list; a line with paths ("/JPEGImages/x.jpg /SegmentationClassAug/x.png") gives its stem."""
    return [Path(line.split()[0]).stem for line in read_lines(path, "split list")]


def _minus(ids: list[str], removed: set[str]) -> list[str]:
    """``ids`` in order without duplicates and without ``removed``."""
    seen: set[str] = set()
    kept = []
    for name in ids:
        if name not in removed and name not in seen:
            seen.add(name)
            kept.append(name)
    return kept


class VOCSegmentation(SegmentationFiles):
    """Pascal VOC 2012 segmentation (21 classes), optionally with the SBD "aug" training set.

    Args:
        root: the ``VOC2012`` folder (``JPEGImages/``, ``SegmentationClass/``, ``ImageSets/Segmentation/``).
        split: "train", "val", "trainval" (any ``ImageSets/Segmentation/<split>.txt``) or "train_aug".
        transform: albumentations Compose (or callable taking ``image=``, ``mask=``) applied to each item.
        sbd_root: SBD's ``dataset`` folder (``cls/``, ``train.txt``, ``val.txt``) for ``train_aug``; without it
            ``train_aug`` uses ``root/SegmentationClassAug/``.
        classes: class names (default: ``root/classes.txt`` if present, else VOC's 21).
        palette: RGB colour per class (default: the VOC colour map).
    """

    classes: list[str] = list(VOC_CLASSES)
    palette: list[tuple[int, int, int]] = voc_palette(len(VOC_CLASSES))
    num_classes: int = len(VOC_CLASSES)
    splits: tuple[str, ...] = ("train", "val", "trainval", "train_aug")

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: Callable[..., dict[str, Any]] | None = None,
        sbd_root: str | Path | None = None,
        classes: Sequence[str] | None = None,
        palette: Sequence[Sequence[int]] | None = None,
    ) -> None:
        self.root = require_dir(Path(root), "voc root")
        self.split = split
        self.sbd_root = None if sbd_root is None else require_dir(Path(sbd_root), "SBD root (sbd_root)")
        names, colours = resolve_classes(classes, palette, self.root / "classes.txt", VOC_CLASSES)
        if split == "train_aug":
            samples, source = self._aug_samples()
        else:
            list_file = self.root / LIST_DIR / f"{split}.txt"
            if not list_file.is_file():
                available = sorted(p.stem for p in (self.root / LIST_DIR).glob("*.txt"))
                raise FileNotFoundError(
                    f"voc: split list not found: {list_file} (available: {', '.join(available) or 'none'}; "
                    "or split='train_aug')"
                )
            samples = [self._voc_sample(name) for name in _list_ids(list_file)]
            source = str(list_file)
        super().__init__(samples, names, colours, transform, source)

    def _voc_sample(self, name: str) -> tuple[str, Path, Path]:
        return name, self.root / "JPEGImages" / f"{name}.jpg", self.root / "SegmentationClass" / f"{name}.png"

    def _aug_samples(self) -> tuple[list[tuple[str, Path, Path]], str]:
        lists = self.root / LIST_DIR
        val = set(_list_ids(lists / "val.txt")) if (lists / "val.txt").is_file() else set()
        train = _list_ids(lists / "train.txt") if (lists / "train.txt").is_file() else []
        aug_list = lists / "train_aug.txt"
        aug_dir = self.root / "SegmentationClassAug"
        if self.sbd_root is not None:
            if aug_list.is_file():
                ids, source = _list_ids(aug_list), str(aug_list)
            else:
                sbd_lists = [self.sbd_root / "train.txt", self.sbd_root / "val.txt"]
                ids = [n for f in sbd_lists for n in _list_ids(f)] + train
                source = f"{sbd_lists[0]} + {sbd_lists[1]} + {lists / 'train.txt'} - val"
            return [self._sbd_sample(name) for name in _minus(ids, val)], source
        if not aug_dir.is_dir():
            raise FileNotFoundError(
                f"voc: split 'train_aug' needs sbd_root= (SBD's dataset folder with cls/*.mat) or the folder {aug_dir}"
            )
        if aug_list.is_file():
            ids, source = _list_ids(aug_list), str(aug_list)
        else:
            ids, source = sorted(p.stem for p in aug_dir.glob("*.png")) + train, f"{aug_dir} + {lists / 'train.txt'}"
        samples = [(n, self.root / "JPEGImages" / f"{n}.jpg", aug_dir / f"{n}.png") for n in _minus(ids, val)]
        return samples, source + " - val"

    def _sbd_sample(self, name: str) -> tuple[str, Path, Path]:
        assert self.sbd_root is not None
        image = self.root / "JPEGImages" / f"{name}.jpg"
        if not image.is_file() and (self.sbd_root / "img" / f"{name}.jpg").is_file():
            image = self.sbd_root / "img" / f"{name}.jpg"
        mask = self.root / "SegmentationClass" / f"{name}.png"
        if not mask.is_file():
            mask = self.sbd_root / "cls" / f"{name}.mat"
        return name, image, mask

    def load_mask(self, path: Path) -> np.ndarray:
        return read_sbd_mat(path) if path.suffix == ".mat" else read_mask(path)

    @classmethod
    def find_splits(cls, root: str | Path, sbd_root: str | Path | None = None, **_: Any) -> list[str]:
        """Splits present under ``root``: the lists in ``ImageSets/Segmentation`` and ``train_aug`` when derivable.

        Args:
            root: the ``VOC2012`` folder.
            sbd_root: SBD's ``dataset`` folder, if any.
        """
        root = Path(root)
        found = sorted(p.stem for p in (root / LIST_DIR).glob("*.txt") if p.stem != "train_aug")
        if sbd_root is not None or (root / "SegmentationClassAug").is_dir():
            found.append("train_aug")
        return found


__all__ = ["VOCSegmentation", "read_sbd_mat"]
