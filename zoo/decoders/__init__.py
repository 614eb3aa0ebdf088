"""Decoders, registered by name; each maps an encoder's features to class logits."""

from __future__ import annotations

from zoo.registry import Registry

DECODERS: Registry = Registry("decoder")


def list_decoders() -> list[str]:
    """Names of the registered decoders."""
    return DECODERS.names()


# Importing the modules registers them (after DECODERS exists, which they import).
from zoo.decoders import deeplabv3, deeplabv3plus, fcn, unet  # noqa: E402, F401

__all__ = ["DECODERS", "list_decoders"]
