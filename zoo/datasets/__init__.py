"""Datasets, registered by name: ``build_dataset(name, root=..., split=...)``."""

from __future__ import annotations

from zoo.registry import Registry

DATASETS: Registry = Registry("dataset")


def list_datasets() -> list[str]:
    """Names of the registered datasets."""
    return DATASETS.names()


def build_dataset(name: str, **kwargs):
    """Build a dataset by registry name; keyword arguments go to its constructor (root, split, transform...)."""
    return DATASETS.get(name)(**kwargs)


# Every module that registers a dataset, imported once DATASETS exists (they import it from here).
from zoo.datasets import cityscapes, folder, shapes, voc  # noqa: E402, F401
from zoo.datasets.io import read_image, read_mask, write_mask  # noqa: E402

__all__ = ["DATASETS", "build_dataset", "list_datasets", "read_image", "read_mask", "write_mask"]
