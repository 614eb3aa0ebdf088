"""The MobileNets of TF DeepLab (V2, V3 large and small, EdgeTPU), from the spec tables of
:mod:`zoo.encoders.mobilenet_specs`.

``output_stride`` turns every stride that would overshoot it into dilation in the build loop, as TF-slim's
``mobilenet_base`` does: the unit whose stride is dropped keeps the current rate, the later ones multiply it, and
it adds its input when it keeps the channels, as every unit applying stride 1 does. The parameters are the same at
every output stride. ``padding="tf-same"`` pads the strided convs as TF's ``SAME``
does (the extra row and column at the bottom and right for even sizes; symmetric for odd sizes, where both
conventions agree); ``semantics="deeplab-tf"`` selects it, and ``tap="depthwise"``: the features below the deepest
are the depthwise outputs of the last unit at each reduction, the decoder end points of TF DeepLab
(``layer_4/depthwise_output``, ...).
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
    Activation,
    InvertedResidual,
    MobileNetArch,
    expanded_chs,
    make_divisible,
    scaled_chs,
)
from zoo.encoders.weights import build_with_weights, load_state_dict_file

Padding = Literal["symmetric", "tf-same"]
PADDINGS = ("symmetric", "tf-same")
Tap = Literal["output", "depthwise"]
TAPS = ("output", "depthwise")
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


class HardSigmoidTF(nn.Module):
    """TF-slim MobileNetV3's squeeze-excite gate: ``relu6(x + 3) * 0.16667`` (its constant, not exactly 1/6)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x + 3.0) * 0.16667


def activation(name: Activation) -> nn.Module:
    """ReLU6, ReLU or hard-swish (``x * relu6(x + 3) / 6``: PyTorch's ``nn.Hardswish`` is TF-slim's formula)."""
    return {"relu6": nn.ReLU6, "relu": nn.ReLU, "hard_swish": nn.Hardswish}[name]()


def conv_bn(
    in_chs: int,
    out_chs: int,
    kernel_size: int = 1,
    stride: int = 1,
    dilation: int = 1,
    depthwise: bool = False,
    act: Activation | None = "relu6",
    padding: Padding = "symmetric",
) -> nn.Sequential:
    """Conv (no bias), BatchNorm (eps 1e-3) and the activation (None: the linear projections)."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    same = padding == "tf-same" and stride > 1
    if same:
        layers["pad"] = TFSamePad(kernel_size, stride)
    pad = 0 if same else dilation * (kernel_size - 1) // 2
    groups = in_chs if depthwise else 1
    layers["conv"] = nn.Conv2d(in_chs, out_chs, kernel_size, stride, pad, dilation, groups=groups, bias=False)
    layers["bn"] = BATCH_NORM(out_chs)
    if act is not None:
        layers["act"] = activation(act)
    return nn.Sequential(layers)


class SqueezeExcite(nn.Module):
    """TF-slim MobileNetV3's squeeze-excite: global average, 1x1 conv to a quarter of the channels (a multiple of
    8) with ReLU, 1x1 conv back with the hard-sigmoid gate, times the input. Convs with biases, no BatchNorm.

    Args:
        chs: channels of the gated tensor.
    """

    def __init__(self, chs: int) -> None:
        super().__init__()
        squeeze = make_divisible(chs / 4, 8)
        self.reduce = nn.Conv2d(chs, squeeze, 1)
        self.expand = nn.Conv2d(squeeze, chs, 1)
        self.gate = HardSigmoidTF()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.relu(self.reduce(x.mean((2, 3), keepdim=True)))
        return x * self.gate(self.expand(s))


class InvertedResidualUnit(nn.Module):
    """1x1 expand (skipped when it would not grow the channels), KxK depthwise, optional squeeze-excite, 1x1 linear
    projection; a fused unit (``spec.fused``) has a KxK expand conv and no depthwise conv. A residual connection
    when ``residual`` (the spec allows it, the unit applies stride 1, also where the output stride turned its
    stride into dilation, and keeps the channel count: TF-slim's ``expanded_conv``).

    ``forward`` returns the output and the inner tensor (the depthwise output; the expansion of a fused unit).

    Args:
        in_chs: input channels.
        out_chs: output channels.
        spec: the unit's row (expansion, kernel size, activation, squeeze-excite, fused).
        stride: the stride applied (1 where the output stride turned it into dilation).
        dilation: dilation of the depthwise (or fused) conv.
        residual: whether the unit adds its input.
        padding: "symmetric" or "tf-same" (see :class:`TFSamePad`).
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        spec: InvertedResidual,
        stride: int,
        dilation: int,
        residual: bool,
        padding: Padding = "symmetric",
    ) -> None:
        super().__init__()
        mid, k = expanded_chs(in_chs, spec.expansion), spec.kernel_size
        if spec.fused:
            grows = mid != in_chs
            self.expand = conv_bn(in_chs, mid, k, stride, dilation, act=spec.act, padding=padding) if grows else None
            self.depthwise = None
        else:
            self.expand = conv_bn(in_chs, mid, act=spec.act) if mid != in_chs else None
            self.depthwise = conv_bn(mid, mid, k, stride, dilation, depthwise=True, act=spec.act, padding=padding)
        self.se = SqueezeExcite(mid) if spec.se else None
        self.project = conv_bn(mid, out_chs, act=None)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.expand(x) if self.expand is not None else x
        if self.depthwise is not None:
            y = self.depthwise(y)
        inner = y
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        return (y + x if self.residual else y), inner


class MobileNet(Encoder):
    """A MobileNet of TF DeepLab's zoo as its feature extractor: MobileNetV2 without its final 1x1 conv,
    MobileNetV3 and MobileNet-EdgeTPU up to their last 1x1 conv.

    Taps: the last unit at each reduction (2, 4, 8, 16, 32 at output stride 32; the stem where no unit keeps
    reduction 2), the deepest through the last 1x1 conv. ``tap="depthwise"`` takes the depthwise output of those
    units instead, except for the deepest feature.

    Args:
        arch: the network, e.g. :data:`zoo.encoders.mobilenet_specs.MOBILENET_V2`.
        output_stride: reduction of the deepest feature: 8, 16 or 32.
        in_channels: channels of the input image.
        width: the depth multiplier (TF DeepLab publishes 1.0 and 0.5 for MobileNetV2, 1.0 for the others).
        padding: "symmetric" (PyTorch's) or "tf-same" (TF's ``SAME`` on strided convs).
        tap: "output" (each unit's output) or "depthwise" (TF DeepLab's decoder end points).
    """

    def __init__(
        self,
        arch: MobileNetArch,
        *,
        output_stride: int = 32,
        in_channels: int = 3,
        width: float = 1.0,
        padding: Padding = "symmetric",
        tap: Tap = "output",
    ) -> None:
        super().__init__()
        check_build_args(output_stride, width)
        if padding not in PADDINGS:
            raise ValueError(f"padding must be 'symmetric' or 'tf-same', got {padding!r}")
        if tap not in TAPS:
            raise ValueError(f"tap must be 'output' or 'depthwise', got {tap!r}")
        self.output_stride, self.mean, self.std, self.size_divisor = output_stride, (0.5,) * 3, (0.5,) * 3, 32
        chs = partial(scaled_chs, depth_multiplier=width, round_any_width=arch.round_any_width)
        in_chs = chs(arch.stem_chs)
        self.stem = conv_bn(in_channels, in_chs, 3, 2, act=arch.stem_act, padding=padding)
        units = [(spec, spec.stride if i == 0 else 1) for spec in arch.units for i in range(spec.repeats)]
        self.blocks, self.feature_info = nn.ModuleList(), []
        # the unit index of each feature (-1: the stem) and whether it is the unit's inner tensor; parallel lists,
        # never empty (TorchScript infers an attribute's type from its value)
        self._taps, self._inner = [], []
        if units[0][1] > 1:  # no unit at reduction 2: tap the stem
            self.feature_info.append(FeatureInfo(in_chs, 2))
            self._taps.append(-1)
            self._inner.append(False)
        reduction, dilation = 2, 1
        for i, (spec, spec_stride) in enumerate(units):
            unit_dilation, stride = dilation, spec_stride
            if reduction * spec_stride > output_stride:
                dilation, stride = dilation * spec_stride, 1
            else:
                reduction *= spec_stride
            out_chs = chs(spec.out_chs)
            # TF-slim's rule: the stride applied, so a strided unit turned into dilation adds its input when it
            # keeps the channels (MobileNetV3-small's halved last stage below output stride 32)
            residual = spec.residual and stride == 1 and in_chs == out_chs
            unit = InvertedResidualUnit(in_chs, out_chs, spec, stride, unit_dilation, residual, padding)
            self.blocks.append(unit)
            last = i == len(units) - 1
            if last or units[i + 1][1] > 1:
                inner = tap == "depthwise" and not last
                inner_chs = unit.project.conv.in_channels
                self.feature_info.append(FeatureInfo(inner_chs if inner else out_chs, reduction))
                self._taps.append(i)
                self._inner.append(inner)
            in_chs = out_chs
        self.last = conv_bn(in_chs, chs(arch.last_chs), act=arch.last_act) if arch.last_chs else None
        if self.last is not None:
            self.feature_info[-1] = FeatureInfo(chs(arch.last_chs), reduction)

    def truncate(self, num_features: int) -> None:
        if num_features >= len(self.feature_info):
            return
        stop = self._taps[num_features - 1]
        self.blocks = self.blocks[: stop + 1]
        self.feature_info = self.feature_info[:num_features]
        self._taps, self._inner = self._taps[:num_features], self._inner[:num_features]
        self.last = None

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        features: list[torch.Tensor] = []
        if -1 in self._taps:
            features.append(x)
        for i, block in enumerate(self.blocks):
            x, inner = block(x)
            if i in self._taps:
                features.append(inner if self._inner[self._taps.index(i)] else x)
        if self.last is not None:
            features[-1] = self.last(x)
        return features


def build_mobilenet(
    name: str,
    *,
    output_stride: int = 32,
    weights: str | Path | None = None,
    in_channels: int = 3,
    **kwargs,
) -> MobileNet:
    """Build ``mobilenetv2``, ``mobilenetv3_large``, ``mobilenetv3_small`` or ``mobilenet_edgetpu``.

    Args:
        name: the variant (a key of :data:`zoo.encoders.mobilenet_specs.SPECS`).
        output_stride: 8, 16 or 32.
        weights: None, or a file holding this encoder's state dict (e.g. the ``encoder.`` part of a converted
            TF DeepLab model).
        in_channels: channels of the input image.
        **kwargs: :class:`MobileNet` arguments (``width``, ``padding``, ``tap``).
    """
    if isinstance(weights, str) and not Path(weights).exists():
        raise ValueError(f"weights for {name} must be None or a state-dict file; got {weights!r}")
    state = None if weights is None else load_state_dict_file(weights)
    build = partial(MobileNet, SPECS[name], output_stride=output_stride, in_channels=in_channels, **kwargs)
    return build_with_weights(build, state, f"{weights} ({name})")
