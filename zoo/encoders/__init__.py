"""Encoders, registered by name: ``build_encoder(name, ...)`` returns an :class:`Encoder`."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from zoo.encoders.base import Encoder, FeatureInfo
from zoo.encoders.external import ExternalEncoder, build_external, is_external_name
from zoo.encoders.inception import SPECS as INCEPTION_SPECS
from zoo.encoders.inception import InceptionEncoder, build_inception
from zoo.encoders.mobilenet import MobileNet, build_mobilenet
from zoo.encoders.mobilenet_specs import SPECS as MOBILENET_SPECS
from zoo.encoders.smp_interop import register_smp
from zoo.encoders.xception_aligned import SPECS, AlignedXception, build_aligned_xception
from zoo.encoders.xception_legacy import LegacyXception, build_legacy_xception
from zoo.registry import Registry

ENCODERS: Registry = Registry("encoder")

for _name in SPECS:
    ENCODERS.register(_name)(partial(build_aligned_xception, _name))
ENCODERS.register("xception")(build_legacy_xception)
for _name in INCEPTION_SPECS:
    ENCODERS.register(_name)(partial(build_inception, _name))
for _name in MOBILENET_SPECS:
    ENCODERS.register(_name)(partial(build_mobilenet, _name))
for _name in ENCODERS.names():
    register_smp(_name, ENCODERS.get(_name))

# What ``semantics="deeplab-tf"`` sets in each zoo encoder that TF DeepLab builds differently from PyTorch habits.
DEEPLAB_TF_KWARGS: dict[str, dict[str, str]] = {
    **{name: {"tap": "raw"} for name in SPECS},
    **{name: {"padding": "tf-same", "tap": "depthwise"} for name in MOBILENET_SPECS},
}


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
        **kwargs: encoder-specific arguments (e.g. ``width`` for the zoo's own encoders).
    """
    if name in ENCODERS:
        builder = ENCODERS.get(name)
    elif is_external_name(name):
        builder = partial(build_external, name)
    else:
        valid = ", ".join(ENCODERS.names())
        raise KeyError(
            f"unknown encoder {name!r}; zoo encoders: {valid}; smp encoder names (e.g. resnet50, mobilenet_v2) "
            "and tu-<timm model> (e.g. tu-inception_v3) are also accepted"
        )
    return builder(output_stride=output_stride, weights=weights, in_channels=in_channels, **kwargs)


__all__ = [
    "DEEPLAB_TF_KWARGS",
    "ENCODERS",
    "AlignedXception",
    "Encoder",
    "ExternalEncoder",
    "InceptionEncoder",
    "LegacyXception",
    "MobileNet",
    "FeatureInfo",
    "build_encoder",
    "list_encoders",
]
