"""FCN-style heads: the auxiliary head used for an auxiliary loss in training, and FCN's deepest head."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from zoo.decoders.base import check_num_classes
from zoo.encoders.base import FeatureInfo
from zoo.layers import ConvBNAct, init_weights


class FCNHead(nn.Sequential):
    """3x3 conv-BN-ReLU, dropout, 1x1 classifier (torchvision's ``FCNHead`` shape).

    Args:
        in_channels: channels of the input feature.
        num_classes: output classes.
        channels: channels of the 3x3 conv (default ``in_channels // 4``, at least 16).
        dropout: dropout before the classifier.
    """

    def __init__(self, in_channels: int, num_classes: int, channels: int | None = None, dropout: float = 0.1) -> None:
        check_num_classes(num_classes)
        channels = channels if channels is not None else max(16, in_channels // 4)
        super().__init__()
        self.conv = ConvBNAct(in_channels, channels, 3)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        init_weights(self)


def aux_tap_index(feature_info: Sequence[FeatureInfo]) -> int:
    """The tap the auxiliary head reads: the one before the deepest.

    In the aligned Xceptions that is the 1024-channel stride-16 activation in the exit flow (after the middle
    flow); in a ResNet, ``layer3`` (torchvision's and PSPNet's choice); whatever the output stride. An encoder
    with a single tap gives that tap.

    Args:
        feature_info: the encoder's taps, shallow to deep.
    """
    if not feature_info:
        raise ValueError("feature_info is empty: the encoder exposes no features")
    return max(0, len(feature_info) - 2)


def build_aux_head(feature_info: Sequence[FeatureInfo], num_classes: int) -> tuple[int, FCNHead]:
    """The auxiliary head and the index of the tap it reads (see :func:`aux_tap_index`).

    Args:
        feature_info: the encoder's taps.
        num_classes: output classes.
    """
    index = aux_tap_index(feature_info)
    return index, FCNHead(feature_info[index].channels, num_classes)
