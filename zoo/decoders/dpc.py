"""Dense prediction cell + DeepLabV3+ decoder (Chen et al. 2018, "Searching for Efficient Multi-Scale
Architectures for Dense Image Prediction", arXiv 1809.04184), as in TF DeepLab's xception71 Cityscapes models."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from zoo.decoders.base import check_num_classes, tap_index
from zoo.encoders.base import FeatureInfo
from zoo.layers import ConvBNAct, SeparableConvBNAct, conv3x3_bn_act, init_weights, resize_to


@dataclass(frozen=True)
class CellBranch:
    """One branch of a dense prediction cell: a 3x3 separable conv-BN-ReLU with (height, width) atrous rates.

    Args:
        source: -1 for the cell's input, ``k`` for the output of branch ``k`` (an earlier branch).
        rate: atrous rates (height, width) at output stride 16.
    """

    source: int
    rate: tuple[int, int]


# TF DeepLab's dense_prediction_cell_branch5_top1_cityscapes.json: the searched cell of the paper's Cityscapes model.
CITYSCAPES_CELL = (
    CellBranch(-1, (1, 6)),
    CellBranch(0, (18, 15)),
    CellBranch(1, (6, 3)),
    CellBranch(0, (1, 1)),
    CellBranch(0, (6, 21)),
)


class DensePredictionCell(nn.Module):
    """Branches of separable atrous convs, each reading the input or an earlier branch; concatenated, dropout, 1x1.

    Args:
        in_channels: channels of the input feature.
        branches: the cell's branches (default the published Cityscapes cell).
        channels: channels of every branch and of the output.
        rate_multiplier: factor on every rate (2 at output stride 8, as TF's ``conv_rate_multiplier``).
        dropout: dropout on the concatenated branches, before the projection (TF: keep_prob 0.9).
    """

    def __init__(
        self,
        in_channels: int,
        branches: Sequence[CellBranch] = CITYSCAPES_CELL,
        channels: int = 256,
        rate_multiplier: int = 1,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.sources = [b.source for b in branches]
        for i, source in enumerate(self.sources):
            if not -1 <= source < i:
                raise ValueError(f"branch {i} reads branch {source}: a branch reads -1 (the input) or an earlier one")
        self.branches = nn.ModuleList(
            SeparableConvBNAct(
                in_channels if b.source < 0 else channels,
                channels,
                3,
                (b.rate[0] * rate_multiplier, b.rate[1] * rate_multiplier),
            )
            for b in branches
        )
        self.dropout = nn.Dropout(dropout)
        self.project = ConvBNAct(len(branches) * channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs: list[torch.Tensor] = []
        for source, branch in zip(self.sources, self.branches, strict=True):
            outputs.append(branch(x if source < 0 else outputs[source]))
        return self.project(self.dropout(torch.cat(outputs, dim=1)))


class DPCDecoder(nn.Module):
    """A dense prediction cell on the deepest feature in place of ASPP, then DeepLabV3+'s decoder; logits at 4.

    The decoder part is :class:`zoo.decoders.deeplabv3plus.DeepLabV3PlusDecoder`'s: the stride-4 feature
    projected to 48 channels, concatenated with the upsampled cell output, two separable 3x3 convs, a 1x1
    classifier. The cell's rates are given at output stride 16 and doubled at 8; at 32 they stay those of 16
    (TF DeepLab has no rates for 32).

    Args:
        feature_info: the encoder's taps; needs a tap at reduction 4.
        num_classes: output classes.
        output_stride: the encoder's output stride (sets the rate multiplier).
        branches: the cell's branches (default the published Cityscapes cell).
        channels: channels of the cell's branches and output.
        low_level_channels: channels of the projected low-level feature.
        decoder_channels: channels of the two refining convs.
        dropout: dropout on the cell's concatenated branches.
        align_corners: ``align_corners`` of the bilinear upsampling (True: TF DeepLab's resize).
    """

    def __init__(
        self,
        feature_info: Sequence[FeatureInfo],
        num_classes: int,
        output_stride: int,
        branches: Sequence[CellBranch] = CITYSCAPES_CELL,
        channels: int = 256,
        low_level_channels: int = 48,
        decoder_channels: int = 256,
        dropout: float = 0.1,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        check_num_classes(num_classes)
        branches = [b if isinstance(b, CellBranch) else CellBranch(int(b[0]), tuple(b[1])) for b in branches]
        self.align_corners = align_corners
        self.low_index = tap_index(feature_info, 4)
        self.deep_index = tap_index(feature_info, "deepest")
        self.dpc = DensePredictionCell(
            feature_info[self.deep_index].channels, branches, channels, max(1, 16 // output_stride), dropout
        )
        self.low_level = ConvBNAct(feature_info[self.low_index].channels, low_level_channels, 1)
        self.refine = nn.Sequential(
            conv3x3_bn_act(channels + low_level_channels, decoder_channels, separable=True),
            conv3x3_bn_act(decoder_channels, decoder_channels, separable=True),
        )
        self.classifier = nn.Conv2d(decoder_channels, num_classes, 1)
        init_weights(self)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        low = self.low_level(features[self.low_index])
        high = resize_to(self.dpc(features[self.deep_index]), low, self.align_corners)
        return self.classifier(self.refine(torch.cat([high, low], dim=1)))
