"""A small name -> builder registry, one instance per kind (encoders, decoders, datasets, weight sources)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, Protocol, TypeVar

T = TypeVar("T", bound=Callable[..., Any])


class Registry(Generic[T]):
    """Maps names to builders.

    Args:
        kind: what the registry holds, used in error messages ("encoder", "decoder", ...).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

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
        try:
            return self._entries[name]
        except KeyError:
            valid = ", ".join(sorted(self._entries))
            raise KeyError(f"unknown {self.kind} {name!r}; valid names: {valid}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)


class WeightSource(Protocol):
    """Published weights named ``"PREFIX:NAME"`` (e.g. ``"deeplab-tf:xception65_voc_trainaug"``).

    Registered in :data:`WEIGHT_SOURCES` by the package that provides them (``zoo.convert`` for TF DeepLab), so
    the model and encoder builders accept such names without importing that package.
    """

    def model_state(self, weights: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(build_model arguments, state dict) of a whole published model."""
        ...

    def encoder_state(self, weights: str, encoder: str) -> dict[str, Any]:
        """The state dict of a published backbone for the zoo encoder ``encoder``."""
        ...


WEIGHT_SOURCES: Registry = Registry("weights source")


def weight_source(weights: object) -> WeightSource | None:
    """The registered source of ``"PREFIX:NAME"`` weights, or None for other values (files, "imagenet", None)."""
    prefix, sep, _ = str(weights).partition(":")
    if not sep or prefix not in WEIGHT_SOURCES:
        return None
    return WEIGHT_SOURCES.get(prefix)
