"""A small name -> builder registry, one instance per kind (encoders, decoders, datasets, weight sources)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

T = TypeVar("T", bound=Callable[..., Any])


class Registry(Generic[T]):
    """Maps names to builders.

    Args:
        kind: what the registry holds, used in error messages ("encoder", "decoder", ...).
        providers: name -> the module whose import registers it; the module is imported the first time the name
            is looked up, so a lookup never depends on what was imported before.
    """

    def __init__(self, kind: str, providers: dict[str, str] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._providers = dict(providers or {})

    def _provide(self, name: object) -> None:
        """Import the module that registers ``name`` if it is a provided name not yet registered."""
        module = self._providers.get(name) if isinstance(name, str) else None
        if module is not None and name not in self._entries:
            importlib.import_module(module)

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that adds a builder under ``name``; a duplicate name raises ``KeyError``."""

        def add(builder: T) -> T:
            if name in self._entries:
                raise KeyError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = builder
            return builder

        return add

    def get(self, name: str) -> T:
        """The builder registered under ``name``; an unknown name raises ``KeyError`` listing the valid ones."""
        self._provide(name)
        try:
            return self._entries[name]
        except KeyError:
            valid = ", ".join(sorted(self._entries))
            raise KeyError(f"unknown {self.kind} {name!r}; valid names: {valid}") from None

    def names(self) -> list[str]:
        return sorted({*self._entries, *self._providers})

    def __contains__(self, name: object) -> bool:
        self._provide(name)
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())


class WeightSource(Protocol):
    """Published weights named ``"PREFIX:NAME"`` (e.g. ``"deeplab-tf:xception65_voc_trainaug"``).

    Registered in :data:`WEIGHT_SOURCES` by the package that provides them (``zoo.convert`` for TF DeepLab); the
    prefix → package table below imports that package on the first lookup of its prefix, so the model and encoder
    builders accept such names whatever was imported before.
    """

    def model_state(self, weights: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(build_model arguments, state dict) of a whole published model."""
        ...

    def encoder_state(self, weights: str, encoder: str) -> dict[str, Any]:
        """The state dict of a published backbone for the zoo encoder ``encoder``."""
        ...


@runtime_checkable
class SegmentationDataset(Protocol):
    """What training, ``zoo data`` and evaluation need of a dataset (every entry of ``zoo.data.DATASETS``).

    Built as ``DATASETS.get(name)(root=..., split=..., transform=..., **dataset_kwargs)``; items are dicts with
    ``image`` (H×W×3 uint8 RGB, or the transform's output), ``mask`` (H×W class ids, ``ignore_index`` left out) and
    ``name``.
    """

    classes: list[str]  # class names in id order
    palette: list[tuple[int, int, int]]  # one RGB colour per class
    num_classes: int
    ignore_index: int  # the mask value left out of the loss and the metrics

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Item ``index`` with the transform applied."""
        ...

    def load(self, index: int) -> dict[str, Any]:
        """Item ``index`` without the transform, checked (``zoo data check`` and training read every item once)."""
        ...

    @classmethod
    def find_splits(cls, root: Any, **kwargs: Any) -> list[Any]:
        """The splits present under ``root`` (``zoo data check`` without ``--split``)."""
        ...


@runtime_checkable
class PreparableDataset(Protocol):
    """A dataset class that can also write its own files (e.g. ``shapes-voc``), an optional part of the contract.

    A training config's ``data.prepare`` holds the arguments of ``prepare``, which the DataModule checks with
    ``dry_run`` when it is built and calls in ``prepare_data``. Such a class states ``classes`` and ``palette`` as
    class attributes: they are linked to the model before its files exist.
    """

    @classmethod
    def prepare(cls, root: Any, *, dry_run: bool = False, **kwargs: Any) -> bool:
        """Write the dataset's files into ``root`` unless a complete copy is there; returns whether it wrote (or,
        with ``dry_run``, would write: then only ``root`` and the arguments are checked). Never writes into a
        folder of other files (``ValueError`` naming ``root``); an argument it does not take is a ``TypeError``."""
        ...


# prefix -> the package whose import registers it (imported on the prefix's first lookup)
WEIGHT_PROVIDERS = {"deeplab-tf": "zoo.convert"}
WEIGHT_SOURCES: Registry = Registry("weights source", providers=WEIGHT_PROVIDERS)


def weight_source(weights: object) -> WeightSource | None:
    """The registered source of ``"PREFIX:NAME"`` weights, or None for other values (files, "imagenet", None)."""
    prefix, sep, _ = str(weights).partition(":")
    if not sep or prefix not in WEIGHT_SOURCES:
        return None
    return WEIGHT_SOURCES.get(prefix)
