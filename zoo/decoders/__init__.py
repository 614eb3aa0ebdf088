"""Decoders, registered by name; each maps an encoder's features to class logits."""

from __future__ import annotations

from zoo.decoders.deeplabv3 import DeepLabV3Decoder
from zoo.decoders.deeplabv3plus import DeepLabV3PlusDecoder
from zoo.decoders.dpc import DPCDecoder
from zoo.decoders.fcn import FCNDecoder
from zoo.decoders.lraspp import LRASPPDecoder
from zoo.decoders.unet import UNetDecoder
from zoo.registry import Registry

DECODERS: Registry = Registry("decoder")
for _name, _builder in {
    "deeplabv3": DeepLabV3Decoder,
    "deeplabv3plus": DeepLabV3PlusDecoder,
    "dpc": DPCDecoder,
    "fcn": FCNDecoder,
    "lraspp": LRASPPDecoder,
    "unet": UNetDecoder,
}.items():
    DECODERS.register(_name)(_builder)


def list_decoders() -> list[str]:
    """Names of the registered decoders."""
    return DECODERS.names()


__all__ = [
    "DECODERS",
    "DPCDecoder",
    "DeepLabV3Decoder",
    "DeepLabV3PlusDecoder",
    "FCNDecoder",
    "LRASPPDecoder",
    "UNetDecoder",
    "list_decoders",
]
