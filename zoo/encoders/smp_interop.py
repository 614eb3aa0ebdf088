"""The zoo's encoders in smp's encoder table, as ``zoo-<name>`` (``zoo-xception65``, ``zoo-inception_v3``, ...).

After ``import zoo.encoders`` (or any zoo build),
``smp.DeepLabV3Plus(encoder_name="zoo-xception65", encoder_weights=None, encoder_output_stride=16)`` builds.
smp wants ``depth + 1`` positional features (the input first) and ``out_channels`` to match; the zoo's taps are
one per reduction 2..32 (the deepest repeating when dilated).
"""

from __future__ import annotations

from collections.abc import Callable

import segmentation_models_pytorch as smp
import torch
from segmentation_models_pytorch.encoders._utils import patch_first_conv
from torch import nn

from zoo.encoders.base import Encoder


class SmpEncoder(nn.Module):
    """smp-style wrapper around a zoo encoder.

    Args:
        build: callable ``build(output_stride=..., in_channels=...) -> Encoder``.
        depth: number of stages smp uses (1..5).
        output_stride: 8, 16 or 32 (smp passes it on construction).
        **kwargs: passed to ``build`` (e.g. ``width``).
    """

    _is_torch_scriptable = True
    _is_torch_exportable = True
    _is_torch_compilable = True

    def __init__(self, build: Callable[..., Encoder], depth: int = 5, output_stride: int = 32, **kwargs) -> None:
        super().__init__()
        if not 1 <= depth <= 5:
            raise ValueError(f"depth must be in 1..5, got {depth}")
        self.encoder = build(output_stride=output_stride, **kwargs)
        self.encoder.truncate(depth)  # build only what the depth needs (PSPNet's default depth is 3)
        self._depth, self._output_stride, self._in_channels = depth, output_stride, 3
        self._out_channels = [3] + [f.channels for f in self.encoder.feature_info]

    @property
    def out_channels(self) -> list[int]:
        return [self._in_channels] + self._out_channels[1 : self._depth + 1]

    @property
    def output_stride(self) -> int:
        return min(self._output_stride, 1 << self._depth)

    def set_in_channels(self, in_channels: int, pretrained: bool = True) -> None:
        if in_channels != 3:
            self._in_channels = in_channels
            patch_first_conv(model=self.encoder, new_in_channels=in_channels, pretrained=pretrained)

    def make_dilated(self, output_stride: int) -> None:
        if output_stride != self._output_stride:
            raise ValueError(f"built at output_stride={self._output_stride}, asked for {output_stride}")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [x]
        features.extend(self.encoder(x)[: self._depth])
        return features


def register_smp(name: str, build: Callable[..., Encoder]) -> None:
    """Add ``zoo-<name>`` to smp's encoder table (random init only: load weights through the zoo)."""
    smp.encoders.encoders[f"zoo-{name}"] = {
        "encoder": SmpEncoder,
        "params": {"build": build},
        "pretrained_settings": {},
    }
