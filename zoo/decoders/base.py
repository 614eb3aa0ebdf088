"""Finding an encoder's features by reduction, never by list position."""

from __future__ import annotations

from collections.abc import Sequence

from zoo.encoders.base import FeatureInfo


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
