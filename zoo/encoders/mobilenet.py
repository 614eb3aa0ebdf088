"""MobileNetV2 as TF DeepLab builds it, from the spec table of :mod:`zoo.encoders.mobilenet_specs`.

``output_stride`` turns every stride that would overshoot it into dilation in the build loop, as TF-slim's
``mobilenet_base`` does: the unit whose stride is dropped keeps the current rate, the later ones multiply it. The
parameters are the same at every output stride. ``padding="tf-same"`` pads the strided convs as TF's ``SAME``
does (the extra row and column at the bottom and right for even sizes; symmetric for odd sizes, where both
conventions agree); ``semantics="deeplab-tf"`` selects it.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from zoo.encoders.base import Encoder, FeatureInfo, check_build_args
from zoo.encoders.mobilenet_specs import (
    SPECS,
    STEM_CHS,
    InvertedResidual,
    expanded_chs,
    scaled_chs,
)
from zoo.encoders.weights import build_with_weights, load_state_dict_file

Padding = Literal["symmetric", "tf-same"]
PADDINGS = ("symmetric", "tf-same")
BATCH_NORM = partial(nn.BatchNorm2d, eps=1e-3)  # TF-slim's epsilon


class TFSamePad(nn.Module):
    """Zero padding of TF's ``padding="SAME"`` for a strided conv: ``ceil(n / stride)`` outputs, the odd pixel of
    padding at the bottom and right.

    Args:
        kernel_size: the conv's kernel size.
        stride: the conv's stride.
    """

    def __init__(self, kernel_size: int, stride: int) -> None:
        super().__init__()
        if kernel_size < stride:
            raise ValueError(f"TFSamePad needs kernel_size >= stride, got {kernel_size} and {stride}")
        self.kernel_size, self.stride = kernel_size, stride

    def _pads(self, size: int) -> tuple[int, int]:
        # TF: max((ceil(size / s) - 1) * s + k - size, 0) = k - s + (-size mod s) for k >= s; written without a
        # branch, so an exported graph keeps it as arithmetic on the input's size instead of a constant.
        total = self.kernel_size - self.stride + (-size) % self.stride
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = self._pads(x.shape[-2])
        left, right = self._pads(x.shape[-1])
        return F.pad(x, (left, right, top, bottom))


def conv_bn(
    in_chs: int,
    out_chs: int,
    kernel_size: int = 1,
    stride: int = 1,
    dilation: int = 1,
    depthwise: bool = False,
    act: bool = True,
    padding: Padding = "symmetric",
) -> nn.Sequential:
    """Conv (no bias), BatchNorm (eps 1e-3) and ReLU6 (none for the linear projections)."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    same = padding == "tf-same" and stride > 1
    if same:
        layers["pad"] = TFSamePad(kernel_size, stride)
    pad = 0 if same else dilation * (kernel_size - 1) // 2
    groups = in_chs if depthwise else 1
    layers["conv"] = nn.Conv2d(in_chs, out_chs, kernel_size, stride, pad, dilation, groups=groups, bias=False)
    layers["bn"] = BATCH_NORM(out_chs)
    if act:
        layers["act"] = nn.ReLU6(inplace=True)
    return nn.Sequential(layers)


class InvertedResidualUnit(nn.Module):
    """1x1 expand (skipped when the expansion is 1), 3x3 depthwise, 1x1 linear projection; a residual connection
    when the unit keeps stride 1 (in its spec) and the channel count.

    Args:
        in_chs: input channels.
        out_chs: output channels.
        expansion: expand conv channels / input channels.
        stride: the stride applied (1 where the output stride turned it into dilation).
        dilation: dilation of the depthwise conv.
        residual: whether the unit adds its input.
        padding: "symmetric" or "tf-same" (see :class:`TFSamePad`).
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        expansion: int,
        stride: int,
        dilation: int,
        residual: bool,
        padding: Padding = "symmetric",
    ) -> None:
        super().__init__()
        mid = expanded_chs(in_chs, expansion)
        self.expand = conv_bn(in_chs, mid) if mid != in_chs else None
        self.depthwise = conv_bn(mid, mid, 3, stride, dilation, depthwise=True, padding=padding)
        self.project = conv_bn(mid, out_chs, act=False)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x) if self.expand is not None else x))
        return y + x if self.residual else y


class MobileNetV2(Encoder):
    """MobileNetV2 (Sandler et al. 2018) without its final 1x1 conv, as TF DeepLab's feature extractor.

    Taps: the output of the last unit at each reduction (2, 4, 8, 16, 32 at output stride 32).

    Args:
        specs: the stages, e.g. :data:`zoo.encoders.mobilenet_specs.MOBILENET_V2`.
        output_stride: reduction of the deepest feature: 8, 16 or 32.
        in_channels: channels of the input image.
        width: the depth multiplier (1.0 and 0.5 are published by TF DeepLab).
        padding: "symmetric" (PyTorch's) or "tf-same" (TF's ``SAME`` on strided convs).
    """

    def __init__(
        self,
        specs: tuple[InvertedResidual, ...],
        *,
        output_stride: int = 32,
        in_channels: int = 3,
        width: float = 1.0,
        padding: Padding = "symmetric",
    ) -> None:
        super().__init__()
        check_build_args(output_stride, width)
        if padding not in PADDINGS:
            raise ValueError(f"padding must be 'symmetric' or 'tf-same', got {padding!r}")
        self.output_stride, self.mean, self.std, self.size_divisor = output_stride, (0.5,) * 3, (0.5,) * 3, 32
        in_chs = scaled_chs(STEM_CHS, width)
        self.stem = conv_bn(in_channels, in_chs, 3, 2, padding=padding)
        units = [(spec, spec.stride if i == 0 else 1) for spec in specs for i in range(spec.repeats)]
        self.blocks, self.feature_info, self._taps = nn.ModuleList(), [], []
        reduction, dilation = 2, 1
        for i, (spec, spec_stride) in enumerate(units):
            unit_dilation, stride = dilation, spec_stride
            if reduction * spec_stride > output_stride:
                dilation, stride = dilation * spec_stride, 1
            else:
                reduction *= spec_stride
            out_chs = scaled_chs(spec.out_chs, width)
            residual = spec_stride == 1 and in_chs == out_chs
            self.blocks.append(
                InvertedResidualUnit(in_chs, out_chs, spec.expansion, stride, unit_dilation, residual, padding)
            )
            in_chs = out_chs
            if i == len(units) - 1 or units[i + 1][1] > 1:
                self.feature_info.append(FeatureInfo(out_chs, reduction))
                self._taps.append(i)

    def truncate(self, num_features: int) -> None:
        if num_features >= len(self.feature_info):
            return
        self.blocks = self.blocks[: self._taps[num_features - 1] + 1]
        self.feature_info = self.feature_info[:num_features]
        self._taps = self._taps[:num_features]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        features: list[torch.Tensor] = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self._taps:
                features.append(x)
        return features


def build_mobilenet(
    name: str,
    *,
    output_stride: int = 32,
    weights: str | Path | None = None,
    in_channels: int = 3,
    **kwargs,
) -> MobileNetV2:
    """Build ``mobilenetv2``.

    Args:
        name: the variant (``mobilenetv2``).
        output_stride: 8, 16 or 32.
        weights: None, or a file holding this encoder's state dict (e.g. the ``encoder.`` part of a converted
            TF DeepLab model).
        in_channels: channels of the input image.
        **kwargs: :class:`MobileNetV2` arguments (``width``, ``padding``).
    """
    if isinstance(weights, str) and not Path(weights).exists():
        raise ValueError(f"weights for {name} must be None or a state-dict file; got {weights!r}")
    state = None if weights is None else load_state_dict_file(weights)
    build = partial(MobileNetV2, SPECS[name], output_stride=output_stride, in_channels=in_channels, **kwargs)
    return build_with_weights(build, state, f"{weights} ({name})")
