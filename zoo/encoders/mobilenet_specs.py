"""The MobileNets of TF DeepLab as spec tables, read by :mod:`zoo.encoders.mobilenet`.

A network is a stem conv, inverted-residual units (:class:`InvertedResidual`; a row with ``repeats`` > 1 strides
only in its first unit) and, for MobileNetV3 and MobileNet-EdgeTPU, a last 1x1 conv. The names are those of
TF-slim's ``mobilenet`` graphs (research/slim/nets/mobilenet, Apache-2.0) that TF DeepLab builds on: ``Conv`` for
the stem, ``expanded_conv``, ``expanded_conv_1``, ... for the units, each with its ``expand`` (absent when the
expansion does not grow the channels), ``depthwise``, ``squeeze_excite`` and ``project`` convs, ``Conv_1`` for the
last conv, so weight converters read the same table.
"""

from __future__ import annotations

from dataclasses import dataclass

Activation = str  # "relu6", "relu" or "hard_swish"


@dataclass(frozen=True)
class InvertedResidual:
    """A stage of inverted-residual units: 1x1 expand, KxK depthwise, optional squeeze-excite, 1x1 linear projection.

    Args:
        expansion: the expand conv's channels as a multiple of the unit's input channels (rounded to 8).
        out_chs: output channels (before the depth multiplier).
        repeats: units in the stage.
        stride: stride of the stage's first unit.
        kernel_size: the depthwise (or fused) conv's kernel size.
        act: activation of the expand and depthwise convs.
        se: squeeze-excite (hard-sigmoid gate) after the depthwise conv.
        fused: a full KxK expand conv and no depthwise conv (MobileNet-EdgeTPU's early units).
        residual: whether the unit may add its input (when it keeps the stride and the channels).
    """

    expansion: float
    out_chs: int
    repeats: int = 1
    stride: int = 1
    kernel_size: int = 3
    act: Activation = "relu6"
    se: bool = False
    fused: bool = False
    residual: bool = True


@dataclass(frozen=True)
class MobileNetArch:
    """A whole MobileNet as TF DeepLab's feature extractor builds it.

    Args:
        units: the stages.
        stem_chs: channels of the stride-2 3x3 stem conv.
        stem_act: the stem's activation.
        last_chs: channels of the last 1x1 conv (0: none, as in MobileNetV2's DeepLab extractor).
        last_act: the last conv's activation.
        round_any_width: channels round to multiples of 8 at every depth multiplier (MobileNetV3, EdgeTPU); False
            rounds only at 1.0 (TF DeepLab's MobileNetV2: ``min_depth = divisible_by = 1`` otherwise).
        scope: the TF-slim scope of the graph.
    """

    units: tuple[InvertedResidual, ...]
    stem_chs: int
    stem_act: Activation
    last_chs: int = 0
    last_act: Activation = "relu"
    round_any_width: bool = True
    scope: str = "MobilenetV3"


def _v3(expansion: float, out_chs: int, k: int, s: int, act: Activation, se: bool = False) -> InvertedResidual:
    return InvertedResidual(expansion, out_chs, 1, s, k, act, se)


def _tpu(expansion: float, out_chs: int, k: int, s: int, repeats: int = 1, fused: bool = False, residual=True):
    return InvertedResidual(expansion, out_chs, repeats, s, k, "relu", False, fused, residual)


# Sandler et al. 2018, Table 2 (t, c, n, s), without the final 1x1 conv to 1280 channels: TF DeepLab's feature
# extractor stops at the last unit ("layer_18").
MOBILENET_V2 = MobileNetArch(
    units=(
        InvertedResidual(1, 16, 1, 1),
        InvertedResidual(6, 24, 2, 2),
        InvertedResidual(6, 32, 3, 2),
        InvertedResidual(6, 64, 4, 2),
        InvertedResidual(6, 96, 3, 1),
        InvertedResidual(6, 160, 3, 2),
        InvertedResidual(6, 320, 1, 1),
    ),
    stem_chs=32,
    stem_act="relu6",
    round_any_width=False,
    scope="MobilenetV2",
)
# TF-slim's V3_LARGE (Howard et al. 2019, Table 1) as TF DeepLab's ``mobilenet_v3_large_seg`` builds it: the last
# stage and the last conv at half the channels (expansions 336, 480, 480 of 112, 80, 80 inputs), up to "layer_17"
# (the 1x1 conv, 960 / 2 channels; no pooling, no classifier).
MOBILENET_V3_LARGE = MobileNetArch(
    units=(
        _v3(1, 16, 3, 1, "relu"),
        _v3(4, 24, 3, 2, "relu"),
        _v3(3, 24, 3, 1, "relu"),
        _v3(3, 40, 5, 2, "relu", se=True),
        _v3(3, 40, 5, 1, "relu", se=True),
        _v3(3, 40, 5, 1, "relu", se=True),
        _v3(6, 80, 3, 2, "hard_swish"),
        _v3(2.5, 80, 3, 1, "hard_swish"),
        _v3(184 / 80, 80, 3, 1, "hard_swish"),
        _v3(184 / 80, 80, 3, 1, "hard_swish"),
        _v3(6, 112, 3, 1, "hard_swish", se=True),
        _v3(6, 112, 3, 1, "hard_swish", se=True),
        _v3(3, 80, 5, 2, "hard_swish", se=True),
        _v3(6, 80, 5, 1, "hard_swish", se=True),
        _v3(6, 80, 5, 1, "hard_swish", se=True),
    ),
    stem_chs=16,
    stem_act="hard_swish",
    last_chs=480,
    last_act="hard_swish",
)
# TF-slim's V3_SMALL as TF DeepLab's ``mobilenet_v3_small_seg`` builds it: the last stage and conv halved
# (expansions 144, 288, 288 of 48-channel inputs), up to "layer_13" (the 1x1 conv, 576 / 2 channels).
MOBILENET_V3_SMALL = MobileNetArch(
    units=(
        _v3(1, 16, 3, 2, "relu", se=True),
        _v3(72 / 16, 24, 3, 2, "relu"),
        _v3(88 / 24, 24, 3, 1, "relu"),
        _v3(4, 40, 5, 2, "hard_swish", se=True),
        _v3(6, 40, 5, 1, "hard_swish", se=True),
        _v3(6, 40, 5, 1, "hard_swish", se=True),
        _v3(3, 48, 5, 1, "hard_swish", se=True),
        _v3(3, 48, 5, 1, "hard_swish", se=True),
        _v3(3, 48, 5, 2, "hard_swish", se=True),
        _v3(6, 48, 5, 1, "hard_swish", se=True),
        _v3(6, 48, 5, 1, "hard_swish", se=True),
    ),
    stem_chs=16,
    stem_act="hard_swish",
    last_chs=288,
    last_act="hard_swish",
)
# TF-slim's V3_EDGETPU as TF DeepLab's ``mobilenet_edgetpu`` builds it, up to "layer_24" (the 1x1 conv to 1280):
# fused KxK expand convs in the first stages, ReLU throughout (the spec's defaults), one unit without residual.
MOBILENET_EDGETPU = MobileNetArch(
    units=(
        _tpu(1, 16, 3, 1, fused=True),
        _tpu(8, 32, 3, 2, fused=True),
        _tpu(4, 32, 3, 1, 3, fused=True),
        _tpu(8, 48, 3, 2, fused=True),
        _tpu(4, 48, 3, 1, 3, fused=True),
        _tpu(8, 96, 3, 2),
        _tpu(4, 96, 3, 1, 3),
        _tpu(8, 96, 3, 1, residual=False),
        _tpu(4, 96, 3, 1, 3),
        _tpu(8, 160, 5, 2),
        _tpu(4, 160, 5, 1, 3),
        _tpu(8, 192, 3, 1),
    ),
    stem_chs=32,
    stem_act="relu",
    last_chs=1280,
    last_act="relu",
    scope="MobilenetEdgeTPU",
)
SPECS = {
    "mobilenetv2": MOBILENET_V2,
    "mobilenetv3_large": MOBILENET_V3_LARGE,
    "mobilenetv3_small": MOBILENET_V3_SMALL,
    "mobilenet_edgetpu": MOBILENET_EDGETPU,
}


def make_divisible(value: float, divisor: int, min_value: int | None = None) -> int:
    """TF-slim's channel rounding: ``value`` to the nearest multiple of ``divisor``, never below 90% of it."""
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def scaled_chs(chs: int, depth_multiplier: float, round_any_width: bool = False) -> int:
    """A conv's channels at ``depth_multiplier``: multiples of 8 at 1.0 (or at any multiplier when
    ``round_any_width``), plain rounding otherwise (TF DeepLab's MobileNetV2 at 0.5: 16, 8, 12, 16, 32, ...)."""
    divisor = 8 if depth_multiplier == 1.0 or round_any_width else 1
    return make_divisible(chs * depth_multiplier, divisor)


def expanded_chs(in_chs: int, expansion: float) -> int:
    """The expand conv's channels: ``in_chs * expansion`` rounded to a multiple of 8 (slim's
    ``expand_input_by_factor``, whatever the depth multiplier); ``in_chs`` where that does not grow them (no
    expand conv then)."""
    mid = make_divisible(in_chs * expansion, 8)
    return mid if mid > in_chs else in_chs


def unit_name(index: int) -> str:
    """The unit's scope in TF-slim's graph: ``expanded_conv``, ``expanded_conv_1``, ..."""
    return "expanded_conv" if index == 0 else f"expanded_conv_{index}"
