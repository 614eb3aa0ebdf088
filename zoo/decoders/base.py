"""Finding an encoder's features by reduction, never by list position; pieces the decoders share."""

from __future__ import annotations

from collections.abc import Sequence

from zoo.encoders.base import FeatureInfo
from zoo.layers import ASPP, atrous_rates_for


def tap_index(feature_info: Sequence[FeatureInfo], reduction: int | str) -> int:
    """Index of the last tap at ``reduction`` (an int, or "deepest" for the last tap).

    With a dilated encoder the deepest reductions repeat; the last tap at a reduction is the deepest one there.

    Args:
        feature_info: the encoder's taps, shallow to deep.
        reduction: the wanted reduction, or "deepest".

    Raises:
        ValueError: no tap has that reduction (the message lists the reductions there are).
    """
    if not feature_info:
        raise ValueError("feature_info is empty: the encoder exposes no features")
    if reduction == "deepest":
        return len(feature_info) - 1
    found = [i for i, f in enumerate(feature_info) if f.reduction == reduction]
    if not found:
        have = [f.reduction for f in feature_info]
        raise ValueError(f"the encoder has no feature at reduction {reduction}; its reductions are {have}")
    return found[-1]


def check_num_classes(num_classes: int) -> None:
    """Raise ``ValueError`` naming ``num_classes`` unless it is a positive int."""
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")


def deepest_aspp(
    feature_info: Sequence[FeatureInfo],
    output_stride: int,
    atrous_rates: Sequence[int] | None,
    channels: int,
    separable: bool,
    dropout: float,
    align_corners: bool = False,
) -> tuple[int, ASPP]:
    """The deepest tap's index and an ASPP over it, with the papers' rates for ``output_stride`` unless given.

    Args:
        feature_info: the encoder's taps.
        output_stride: the encoder's output stride (sets the default atrous rates).
        atrous_rates: override of the three rates.
        channels: channels of every ASPP branch and of its output.
        separable: depthwise-separable atrous branches.
        dropout: dropout after the projection.
        align_corners: ``align_corners`` of the image-pooling branch's upsampling.
    """
    rates = tuple(atrous_rates) if atrous_rates is not None else atrous_rates_for(output_stride)
    index = tap_index(feature_info, "deepest")
    return index, ASPP(feature_info[index].channels, channels, rates, separable, dropout, align_corners=align_corners)
