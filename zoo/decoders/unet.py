"""U-Net decoder (Ronneberger et al. 2015) over every tap of the encoder."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from zoo.decoders.base import check_num_classes
from zoo.encoders.base import FeatureInfo
from zoo.layers import ConvBNAct, init_weights, resize_to


class UNetStage(nn.Sequential):
    """Two 3x3 conv-BN-ReLU on the concatenation of the upsampled deeper feature and a skip.

    Args:
        in_channels: channels of the concatenation.
        out_channels: channels of both convs.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(ConvBNAct(in_channels, out_channels, 3), ConvBNAct(out_channels, out_channels, 3))


class UNetDecoder(nn.Module):
    """From the deepest tap, one stage per shallower tap: upsample, concatenate the skip, two conv-BN-ReLU.

    The running feature is resized to the skip's size only when the sizes differ, so a dilated encoder's
    repeated reductions (e.g. two taps at reduction 16 at output stride 16) are concatenated directly.
    Logits (1x1 classifier) come out at the shallowest tap's reduction.

    Args:
        feature_info: the encoder's taps.
        num_classes: output classes.
        output_stride: the encoder's output stride (unused: the decoder follows the taps).
        decoder_channels: channels of each stage, deepest first, one per tap but the deepest; default
            256, 128, 64, 32, 16, ... (halving, at least 16).
    """

    def __init__(
        self,
        feature_info: Sequence[FeatureInfo],
        num_classes: int,
        output_stride: int,
        decoder_channels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        check_num_classes(num_classes)
        if not feature_info:
            raise ValueError("feature_info is empty: the encoder exposes no features")
        skips = [f.channels for f in feature_info[-2::-1]]  # shallower taps, deepest first
        if decoder_channels is None:
            decoder_channels = [max(16, 256 >> i) for i in range(len(skips))]
        decoder_channels = list(decoder_channels)
        if len(decoder_channels) != len(skips):
            raise ValueError(
                f"decoder_channels needs {len(skips)} entries (one per tap but the deepest), got {decoder_channels}"
            )
        in_channels = [feature_info[-1].channels, *decoder_channels[:-1]]
        self.stages = nn.ModuleList(
            UNetStage(c_in + c_skip, c_out)
            for c_in, c_skip, c_out in zip(in_channels, skips, decoder_channels, strict=True)
        )
        self.classifier = nn.Conv2d(decoder_channels[-1] if skips else feature_info[-1].channels, num_classes, 1)
        init_weights(self)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for stage, skip in zip(self.stages, features[-2::-1], strict=True):
            x = stage(torch.cat([resize_to(x, skip), skip], dim=1))
        return self.classifier(x)
