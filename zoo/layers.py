"""Blocks shared by the decoders: conv-norm-act, depthwise-separable conv, ASPP, and weight init."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

NormLayer = Callable[[int], nn.Module]
ActLayer = Callable[[], nn.Module]
Dilation = int | tuple[int, int]


def relu() -> nn.Module:
    """The default activation: an in-place ReLU (it follows a norm layer whose output nothing else reads)."""
    return nn.ReLU(inplace=True)


class ConvBNAct(nn.Sequential):
    """Convolution (no bias), normalisation, activation; "same" padding for odd kernels.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size (odd).
        stride: convolution stride.
        dilation: convolution dilation (atrous rate), or a (height, width) pair.
        groups: convolution groups (``in_channels`` for a depthwise conv).
        norm_layer: normalisation class called with the channel count.
        act_layer: activation class called without arguments; None for no activation.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        dilation: Dilation = 1,
        groups: int = 1,
        norm_layer: NormLayer = nn.BatchNorm2d,
        act_layer: ActLayer | None = relu,
    ) -> None:
        dilation = (dilation, dilation) if isinstance(dilation, int) else (int(dilation[0]), int(dilation[1]))
        padding = tuple(d * (kernel_size - 1) // 2 for d in dilation)
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding, dilation=dilation, groups=groups, bias=False
        )
        self.bn = norm_layer(out_channels)
        self.act = act_layer() if act_layer is not None else nn.Identity()


class SeparableConvBNAct(nn.Sequential):
    """Depthwise-separable conv as in DeepLab's TF reference (``split_separable_conv2d``).

    Depthwise ``kernel_size`` conv + norm + act, then pointwise 1x1 conv + norm + act.

    Args:
        in_channels: input channels (also the depthwise conv's channels).
        out_channels: output channels of the pointwise conv.
        kernel_size: depthwise kernel size (odd).
        dilation: depthwise dilation (atrous rate), or a (height, width) pair.
        norm_layer: normalisation class called with the channel count.
        act_layer: activation class called without arguments.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        dilation: Dilation = 1,
        norm_layer: NormLayer = nn.BatchNorm2d,
        act_layer: ActLayer = relu,
    ) -> None:
        super().__init__()
        norm_act = {"norm_layer": norm_layer, "act_layer": act_layer}
        self.depthwise = ConvBNAct(
            in_channels, in_channels, kernel_size, dilation=dilation, groups=in_channels, **norm_act
        )
        self.pointwise = ConvBNAct(in_channels, out_channels, 1, **norm_act)


def conv3x3_bn_act(
    in_channels: int,
    out_channels: int,
    separable: bool,
    dilation: int = 1,
    norm_layer: NormLayer = nn.BatchNorm2d,
    act_layer: ActLayer = relu,
) -> nn.Module:
    """A 3x3 conv-norm-act, depthwise-separable (:class:`SeparableConvBNAct`) or regular (:class:`ConvBNAct`)."""
    block = SeparableConvBNAct if separable else ConvBNAct
    return block(in_channels, out_channels, 3, dilation=dilation, norm_layer=norm_layer, act_layer=act_layer)


class ASPPPooling(nn.Module):
    """ASPP's image-level branch: global average pool, 1x1 conv-norm-act, bilinear upsampling back.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        norm_layer: normalisation class.
        act_layer: activation class.
        align_corners: ``align_corners`` of the upsampling (TF DeepLab's resize; a 1x1 map broadcasts either way).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        norm_layer: NormLayer = nn.BatchNorm2d,
        act_layer: ActLayer = relu,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        self.conv = ConvBNAct(in_channels, out_channels, 1, norm_layer=norm_layer, act_layer=act_layer)
        self.align_corners = align_corners

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.conv(F.adaptive_avg_pool2d(x, 1))
        return F.interpolate(pooled, size=x.shape[-2:], mode="bilinear", align_corners=self.align_corners)


class ASPP(nn.Module):
    """Atrous Spatial Pyramid Pooling (DeepLabV3, Chen et al. 2017; DeepLabV3+, Chen et al. 2018).

    Five parallel branches on one feature map: a 1x1 conv, one 3x3 atrous conv per rate (depthwise-separable
    when ``separable``), and image pooling; their outputs are concatenated, projected by a 1x1 conv-norm-act and
    passed through dropout.

    Args:
        in_channels: channels of the input feature.
        out_channels: channels of every branch and of the output (256 in the papers).
        atrous_rates: dilation of each 3x3 branch (three in the papers).
        separable: depthwise-separable atrous convs (DeepLabV3+) instead of regular ones (DeepLabV3).
        dropout: dropout probability after the projection (TF reference: keep_prob 0.9, i.e. 0.1).
        norm_layer: normalisation class.
        act_layer: activation class.
        align_corners: ``align_corners`` of the image-pooling branch's upsampling.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 256,
        atrous_rates: Sequence[int] = (6, 12, 18),
        separable: bool = True,
        dropout: float = 0.1,
        norm_layer: NormLayer = nn.BatchNorm2d,
        act_layer: ActLayer = relu,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        branches: list[nn.Module] = [
            ConvBNAct(in_channels, out_channels, 1, norm_layer=norm_layer, act_layer=act_layer)
        ]
        for rate in atrous_rates:
            branches.append(conv3x3_bn_act(in_channels, out_channels, separable, rate, norm_layer, act_layer))
        branches.append(ASPPPooling(in_channels, out_channels, norm_layer, act_layer, align_corners))
        self.branches = nn.ModuleList(branches)
        self.project = ConvBNAct(
            len(branches) * out_channels, out_channels, 1, norm_layer=norm_layer, act_layer=act_layer
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.project(torch.cat([branch(x) for branch in self.branches], dim=1)))


def atrous_rates_for(output_stride: int) -> tuple[int, int, int]:
    """ASPP rates for an encoder output stride: (12, 24, 36) at 8 and (6, 12, 18) at 16 as in the papers.

    At 32 the rates are halved again to (3, 6, 9) (an extension; the papers train at 8 and 16).
    """
    rates = {8: (12, 24, 36), 16: (6, 12, 18), 32: (3, 6, 9)}
    if output_stride not in rates:
        raise ValueError(f"output_stride must be one of 8, 16, 32 for default ASPP rates, got {output_stride}")
    return rates[output_stride]


def init_weights(module: nn.Module) -> None:
    """Standard decoder init: Kaiming normal (fan_out, ReLU) for convs with zero bias, norms to weight 1 bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def resize_to(x: torch.Tensor, reference: torch.Tensor, align_corners: bool = False) -> torch.Tensor:
    """Bilinearly resize ``x`` to ``reference``'s spatial size (no-op when they already match).

    ``align_corners=True`` is TF DeepLab's resize: corner pixels map onto corner pixels, so a grid of
    ``(n - 1) // s + 1`` cells lines up with the ``n``-pixel grid it came from.
    """
    if x.shape[-2:] == reference.shape[-2:]:
        return x
    return F.interpolate(x, size=reference.shape[-2:], mode="bilinear", align_corners=align_corners)
