"""Encoders, registered by name: ``build_encoder(name, ...)`` returns an :class:`Encoder`."""

from __future__ import annotations

from pathlib import Path

from zoo.encoders.base import Encoder, FeatureInfo
from zoo.registry import Registry

ENCODERS: Registry = Registry("encoder")


def list_encoders() -> list[str]:
    """Names of the zoo's own encoders (smp encoder names and ``tu-<timm name>`` also build)."""
    return ENCODERS.names()


def build_encoder(
    name: str,
    *,
    output_stride: int = 32,
    weights: str | Path | None = None,
    in_channels: int = 3,
    **kwargs,
) -> Encoder:
    """Build an encoder by registry name.

    Args:
        name: a zoo encoder (``list_encoders()``), an smp encoder name, or ``tu-<timm model>``.
        output_stride: reduction of the deepest feature, 8, 16 or 32.
        weights: None (random init), "imagenet", or a path to a weights file.
        in_channels: channels of the input image.
        **kwargs: encoder-specific arguments (e.g. ``width`` for the zoo's Xceptions).
    """
    return ENCODERS.get(name)(output_stride=output_stride, weights=weights, in_channels=in_channels, **kwargs)


__all__ = ["ENCODERS", "Encoder", "FeatureInfo", "build_encoder", "list_encoders"]
