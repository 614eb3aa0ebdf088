"""DeepLabV3 head (Chen et al. 2017, "Rethinking Atrous Convolution for Semantic Image Segmentation")."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from zoo.decoders.base import check_num_classes, deepest_aspp
from zoo.encoders.base import FeatureInfo
from zoo.layers import conv3x3_bn_act, init_weights


class DeepLabV3Decoder(nn.Module):
    """ASPP on the deepest feature, a 3x3 256-channel conv-BN-ReLU, a 1x1 classifier; logits at the output stride.

    TF DeepLab's models without a decoder (e.g. its MobileNetV2 configurations: ``atrous_rates=()``,
    ``conv3x3=False``) are ASPP, then the classifier: the ASPP projection feeds the 1x1 classifier directly.

    The same ASPP as :class:`zoo.decoders.deeplabv3plus.DeepLabV3PlusDecoder` (rates from the output stride),
    without the low-level decoder. ``separable`` defaults to False: DeepLabV3 used regular atrous convs;
    depthwise-separable ones came with DeepLabV3+.

    Args:
        feature_info: the encoder's taps.
        num_classes: output classes.
        output_stride: the encoder's output stride (sets the default atrous rates).
        atrous_rates: override of the ASPP rates; ``()`` keeps only the 1x1 branch and image pooling (TF
            DeepLab's MobileNet configurations).
        separable: depthwise-separable convs in ASPP's atrous branches and the 3x3 conv.
        channels: channels of ASPP and the 3x3 conv.
        dropout: dropout after the ASPP projection.
        align_corners: ``align_corners`` of the image-pooling branch's upsampling.
        conv3x3: the 3x3 conv between ASPP and the classifier (False: TF DeepLab's head without a decoder).
    """

    def __init__(
        self,
        feature_info: Sequence[FeatureInfo],
        num_classes: int,
        output_stride: int,
        atrous_rates: Sequence[int] | None = None,
        separable: bool = False,
        channels: int = 256,
        dropout: float = 0.1,
        align_corners: bool = False,
        conv3x3: bool = True,
    ) -> None:
        super().__init__()
        check_num_classes(num_classes)
        self.deep_index, self.aspp = deepest_aspp(
            feature_info, output_stride, atrous_rates, channels, separable, dropout, align_corners
        )
        self.conv = conv3x3_bn_act(channels, channels, separable) if conv3x3 else nn.Identity()
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        init_weights(self)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.classifier(self.conv(self.aspp(features[self.deep_index])))
