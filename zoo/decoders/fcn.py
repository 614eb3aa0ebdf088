"""FCN decoder (Long, Shelhamer and Darrell 2015, "Fully Convolutional Networks for Semantic Segmentation")."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from zoo.decoders.auxiliary import FCNHead
from zoo.decoders.base import check_num_classes, tap_index
from zoo.encoders.base import FeatureInfo
from zoo.layers import init_weights, resize_to

VARIANT_REDUCTIONS = {"32s": (32,), "16s": (32, 16), "8s": (32, 16, 8)}


class FCNDecoder(nn.Module):
    """FCN-32s / 16s / 8s: class scores from the deepest feature plus 1x1 score layers on the skip taps.

    The deepest feature goes through an FCN head (3x3 conv-BN-ReLU, dropout, 1x1 scores), standing in for
    VGG's fc6/fc7. FCN-16s adds a 1x1 score layer on the stride-16 tap, FCN-8s one on the stride-8 tap too;
    coarser scores are upsampled bilinearly to the next finer ones and summed; logits come out at the finest
    scored reduction. The strides are those the encoder gives at its output stride: a stride above the
    output stride means the deepest tap, so with a dilated encoder at output stride 16 the "stride-32" and
    "stride-16" streams are both the deepest tap (scored once) and FCN-8s sums two streams; at output
    stride 8 every variant scores the deepest tap only. The paper's learned 2x deconvolutions (initialised
    to bilinear) are fixed bilinear upsampling here, as in torchvision's and MMSegmentation's FCNs.

    Args:
        feature_info: the encoder's taps.
        num_classes: output classes.
        output_stride: the encoder's output stride.
        variant: "32s", "16s" or "8s".
        head_channels: channels of the 3x3 conv on the deepest feature.
        dropout: dropout before the deepest feature's scores.
    """

    def __init__(
        self,
        feature_info: Sequence[FeatureInfo],
        num_classes: int,
        output_stride: int,
        variant: Literal["32s", "16s", "8s"] = "8s",
        head_channels: int = 512,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        check_num_classes(num_classes)
        if variant not in VARIANT_REDUCTIONS:
            raise ValueError(f"variant must be one of {sorted(VARIANT_REDUCTIONS)}, got {variant!r}")
        deepest = tap_index(feature_info, "deepest")
        deepest_reduction = feature_info[deepest].reduction
        indices = {tap_index(feature_info, min(r, deepest_reduction)) for r in VARIANT_REDUCTIONS[variant]}
        self.skip_indices = sorted(indices - {deepest}, reverse=True)
        self.deep_index = deepest
        self.head = FCNHead(feature_info[deepest].channels, num_classes, head_channels, dropout)
        self.scores = nn.ModuleList(nn.Conv2d(feature_info[i].channels, num_classes, 1) for i in self.skip_indices)
        init_weights(self)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        logits = self.head(features[self.deep_index])
        for index, score in zip(self.skip_indices, self.scores, strict=True):
            skip = score(features[index])
            logits = resize_to(logits, skip) + skip
        return logits
