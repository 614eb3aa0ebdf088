"""Decoders, registered by name; each maps an encoder's features to class logits."""

from __future__ import annotations

from zoo.registry import Registry

DECODERS: Registry = Registry("decoder")


def list_decoders() -> list[str]:
    """Names of the registered decoders."""
    return DECODERS.names()


__all__ = ["DECODERS", "list_decoders"]
