"""DeepLabV3+ decoder (Chen et al. 2018, "Encoder-Decoder with Atrous Separable Convolution", arXiv 1802.02611)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from zoo.decoders.base import check_num_classes, deepest_aspp, tap_index
from zoo.encoders.base import FeatureInfo
from zoo.layers import ConvBNAct, conv3x3_bn_act, init_weights, resize_to


class DeepLabV3PlusDecoder(nn.Module):
    """ASPP on the deepest feature, refined with the stride-4 feature; logits at reduction 4.

    Follows the paper and DeepLab's TF reference (``refine_by_decoder``): ASPP with 256 channels (1x1 branch,
    three atrous 3x3 branches, image pooling; dropout 0.1 after the projection); the ASPP output is upsampled
    bilinearly to the stride-4 feature, which is projected to 48 channels by a 1x1 conv-BN-ReLU; the two are
    concatenated and refined by **two** 3x3 256-channel convs, then a 1x1 classifier. With ``separable=True``
    (the paper's best model, Table 5) the atrous ASPP branches and both decoder convs are depthwise-separable:
    depthwise 3x3 + BN + ReLU, pointwise 1x1 + BN + ReLU, as in the reference.

    Atrous rates follow the output stride as in the paper: (6, 12, 18) at 16, (12, 24, 36) at 8; at 32 the zoo
    uses (3, 6, 9) (rates halved once more; not in the paper).

    Where ``segmentation_models_pytorch.DeepLabV3Plus`` departs from the paper: its rates are fixed at
    (12, 24, 36) whatever the output stride; it puts one separable conv after ASPP (at stride 16) and only one
    after the concatenation (the paper has two after it); its separable convs have no BN/ReLU between the
    depthwise and pointwise parts; and its ASPP dropout is 0.5.

    Args:
        feature_info: the encoder's taps; needs a tap at reduction 4 (``low_level_reduction``).
        num_classes: output classes.
        output_stride: the encoder's output stride (sets the default atrous rates).
        atrous_rates: override of the three ASPP rates.
        separable: depthwise-separable convs in ASPP's atrous branches and the decoder.
        aspp_channels: channels of ASPP's branches and output.
        low_level_channels: channels of the projected low-level feature.
        decoder_channels: channels of the two refining convs.
        dropout: dropout after the ASPP projection.
        low_level_reduction: reduction of the low-level feature.
        align_corners: ``align_corners`` of the bilinear upsampling (True: TF DeepLab's resize, which
            ``build_model(semantics="deeplab-tf")`` selects).
    """

    def __init__(
        self,
        feature_info: Sequence[FeatureInfo],
        num_classes: int,
        output_stride: int,
        atrous_rates: Sequence[int] | None = None,
        separable: bool = True,
        aspp_channels: int = 256,
        low_level_channels: int = 48,
        decoder_channels: int = 256,
        dropout: float = 0.1,
        low_level_reduction: int = 4,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        check_num_classes(num_classes)
        self.align_corners = align_corners
        self.low_index = tap_index(feature_info, low_level_reduction)
        self.deep_index, self.aspp = deepest_aspp(
            feature_info, output_stride, atrous_rates, aspp_channels, separable, dropout, align_corners
        )
        self.low_level = ConvBNAct(feature_info[self.low_index].channels, low_level_channels, 1)
        self.refine = nn.Sequential(
            conv3x3_bn_act(aspp_channels + low_level_channels, decoder_channels, separable),
            conv3x3_bn_act(decoder_channels, decoder_channels, separable),
        )
        self.classifier = nn.Conv2d(decoder_channels, num_classes, 1)
        init_weights(self)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        low = self.low_level(features[self.low_index])
        high = resize_to(self.aspp(features[self.deep_index]), low, self.align_corners)
        return self.classifier(self.refine(torch.cat([high, low], dim=1)))
