"""MobileNetV2 as a spec table (Sandler et al. 2018, Table 2), read by :mod:`zoo.encoders.mobilenet`.

Each stage repeats one inverted-residual unit (:class:`InvertedResidual`); only its first unit is strided. The
names are those of TF-slim's ``mobilenet_v2`` (research/slim/nets/mobilenet, Apache-2.0) that TF DeepLab builds
on: ``Conv`` for the stem, ``expanded_conv``, ``expanded_conv_1``, ... for the units, each with its ``expand``
(absent when the expansion is 1), ``depthwise`` and ``project`` convs, so weight converters read the same table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InvertedResidual:
    """A stage of inverted-residual units: 1x1 expand (ReLU6), 3x3 depthwise (ReLU6), 1x1 linear projection.

    Args:
        expansion: the expand conv's channels as a multiple of the unit's input channels (1: no expand conv).
        out_chs: output channels (before the depth multiplier).
        repeats: units in the stage.
        stride: stride of the stage's first unit (its depthwise conv).
    """

    expansion: int
    out_chs: int
    repeats: int
    stride: int


STEM_CHS = 32
# Sandler et al. 2018, Table 2 (t, c, n, s), without the final 1x1 conv to 1280 channels: TF DeepLab's feature
# extractor stops at the last unit ("layer_18").
MOBILENET_V2 = (
    InvertedResidual(1, 16, 1, 1),
    InvertedResidual(6, 24, 2, 2),
    InvertedResidual(6, 32, 3, 2),
    InvertedResidual(6, 64, 4, 2),
    InvertedResidual(6, 96, 3, 1),
    InvertedResidual(6, 160, 3, 2),
    InvertedResidual(6, 320, 1, 1),
)
SPECS = {"mobilenetv2": MOBILENET_V2}


def make_divisible(value: float, divisor: int, min_value: int | None = None) -> int:
    """TF-slim's channel rounding: ``value`` to the nearest multiple of ``divisor``, never below 90% of it."""
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def scaled_chs(chs: int, depth_multiplier: float) -> int:
    """A conv's channels at ``depth_multiplier``, as TF DeepLab builds MobileNetV2: multiples of 8 at 1.0, plain
    rounding (``min_depth = divisible_by = 1``) at any other multiplier (0.5 gives 16, 8, 12, 16, 32, ...)."""
    divisor = 8 if depth_multiplier == 1.0 else 1
    return make_divisible(chs * depth_multiplier, divisor)


def expanded_chs(in_chs: int, expansion: int) -> int:
    """The expand conv's channels: ``in_chs * expansion`` rounded to a multiple of 8 (slim's
    ``expand_input_by_factor``, whatever the depth multiplier)."""
    return in_chs if expansion == 1 else make_divisible(in_chs * expansion, 8)


def unit_name(index: int) -> str:
    """The unit's scope in TF-slim's graph: ``expanded_conv``, ``expanded_conv_1``, ..."""
    return "expanded_conv" if index == 0 else f"expanded_conv_{index}"
