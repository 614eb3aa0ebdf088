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


__all__ = ["DATASETS", "build_dataset", "list_datasets"]
