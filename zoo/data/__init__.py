"""Datasets, registered by name (``build_dataset(name, root=..., split=...)``), image I/O and transforms."""

from __future__ import annotations

from zoo.data.cityscapes import Cityscapes
from zoo.data.folder import FolderDataset
from zoo.data.io import IGNORE_INDEX, read_image, read_mask, voc_palette, write_mask
from zoo.data.shapes import ShapesDataset, ShapesVOC
from zoo.data.shapes_hard import HardShapesDataset
from zoo.data.voc import VOCSegmentation
from zoo.registry import Registry

DATASETS: Registry = Registry("dataset")
for _name, _builder in {
    "cityscapes": Cityscapes,
    "folder": FolderDataset,
    "shapes": ShapesDataset,
    "shapes-hard": HardShapesDataset,
    "shapes-voc": ShapesVOC,
    "voc": VOCSegmentation,
}.items():
    DATASETS.register(_name)(_builder)


def list_datasets() -> list[str]:
    """Names of the registered datasets."""
    return DATASETS.names()


def build_dataset(name: str, **kwargs):
    """Build a dataset by registry name; keyword arguments go to its constructor (root, split, transform...)."""
    return DATASETS.get(name)(**kwargs)


__all__ = [
    "DATASETS",
    "IGNORE_INDEX",
    "build_dataset",
    "list_datasets",
    "read_image",
    "read_mask",
    "voc_palette",
    "write_mask",
]
