"""DeepLab's modified aligned Xception (xception41/65/71), with atrous separable convolutions.

Each variant is a tuple of frozen :class:`BlockSpec` s read by one generic :class:`AlignedXception`.
``output_stride`` turns every stride that would overshoot it into dilation for all later blocks; the
blocks (and their 1x1 shortcuts) are the same at every output stride, so are the parameters.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from zoo.encoders.base import Encoder, FeatureInfo, check_build_args
from zoo.encoders.weights import build_with_weights, fetch_timm_state_dict, rename_keys
from zoo.layers import relu
from zoo.registry import weight_source

XCEPTION_MEAN = (0.5, 0.5, 0.5)
XCEPTION_STD = (0.5, 0.5, 0.5)
MidActivation = Literal["relu", "elu"] | None
Order = Literal["depthwise_first", "pointwise_first"]
Segments = int | Literal["all"]
Tap = Literal["activated", "raw"]
BATCH_NORM = partial(nn.BatchNorm2d, eps=1e-3)  # TF DeepLab's epsilon
_ACTIVATIONS = {"relu": relu, "elu": nn.ELU}


@dataclass(frozen=True)
class BlockSpec:
    """One Xception unit: three separable convs, the last one strided.

    Args:
        out_chs: output channels of the three separable convs.
        stride: stride of the last separable conv (and of the 1x1 shortcut).
        skip: whether the unit has a residual connection.
        pre_act: ReLU before each separable conv (entry/middle/first exit unit); False puts ReLU after the
            depthwise and the pointwise stage instead (last exit unit).
    """

    out_chs: tuple[int, int, int]
    stride: int = 1
    skip: bool = True
    pre_act: bool = True


def _unit(chs: int, stride: int = 1) -> BlockSpec:
    return BlockSpec((chs, chs, chs), stride)


def _middle(n: int) -> tuple[BlockSpec, ...]:
    return (_unit(728),) * n


EXIT_FLOW = (BlockSpec((728, 1024, 1024), 2), BlockSpec((1536, 1536, 2048), 1, skip=False, pre_act=False))
XCEPTION41 = (_unit(128, 2), _unit(256, 2), _unit(728, 2), *_middle(8), *EXIT_FLOW)
XCEPTION65 = (_unit(128, 2), _unit(256, 2), _unit(728, 2), *_middle(16), *EXIT_FLOW)
XCEPTION71 = (_unit(128, 2), _unit(256), _unit(256, 2), _unit(728), _unit(728, 2), *_middle(16), *EXIT_FLOW)
SPECS = {"xception41": XCEPTION41, "xception65": XCEPTION65, "xception71": XCEPTION71}


class SeparableConv(nn.Sequential):
    """A spatial 3x3 conv and a pointwise 1x1 conv, each followed by BN (and optionally an activation).

    The 3x3 stage is split into ``segments`` independent channel groups: the Xception paper's spectrum from a
    regular convolution (one segment: a one-tower Inception module) through Inception modules (3-4 segments) to
    a depthwise convolution (one segment per channel, "all": Xception). Its modules keep the names ``conv_dw`` and
    ``bn_dw`` of the published, depthwise form.

    Args:
        in_chs: input channels.
        out_chs: output channels.
        stride: stride of the 3x3 conv.
        dilation: dilation of the 3x3 conv.
        mid_act: activation factory (called without arguments) between the two stages, or None.
        out_act: activation factory after the second stage, or None.
        order: "depthwise_first" (Xception) or "pointwise_first" ("extreme Inception").
        segments: groups of the 3x3 conv: 1 (regular conv) ... its channel count, or "all" (depthwise).
        norm_layer: normalisation class called with the channel count.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int = 1,
        dilation: int = 1,
        mid_act: Callable[[], nn.Module] | None = None,
        out_act: Callable[[], nn.Module] | None = None,
        order: Order = "depthwise_first",
        segments: Segments = "all",
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        dw_chs = in_chs if order == "depthwise_first" else out_chs
        groups = dw_chs if segments == "all" else segments
        conv_dw = nn.Conv2d(dw_chs, dw_chs, 3, stride, dilation, dilation, groups=groups, bias=False)
        conv_pw = nn.Conv2d(in_chs, out_chs, 1, bias=False)
        stages = [("dw", conv_dw, dw_chs), ("pw", conv_pw, out_chs)]
        if order == "pointwise_first":
            stages.reverse()
        for i, (kind, conv, chs) in enumerate(stages):
            self.add_module(f"conv_{kind}", conv)
            self.add_module(f"bn_{kind}", norm_layer(chs))
            act = mid_act if i == 0 else out_act
            if act is not None:
                self.add_module("act_mid" if i == 0 else "act_out", act())


class XceptionBlock(nn.Module):
    """Three separable convs with a residual connection (a 1x1 conv + BN where shape or stride changes).

    Args:
        in_chs: input channels.
        spec: the unit's channels, stride, skip and activation placement.
        stride: the stride actually applied (1 where the output stride turned it into dilation).
        dilation: dilation of the depthwise convs.
        mid_activation: activation between depthwise and pointwise in pre-activated units.
        order: order of the depthwise and pointwise stages.
        residual: False drops the residual connection (and its 1x1 shortcut).
        segments: groups of the 3x3 convs (see :class:`SeparableConv`).
        norm_layer: normalisation class called with the channel count.
        tap: "activated" taps the ReLU'd input of the last separable conv, "raw" the second conv's output
            before that ReLU (TF DeepLab's ``separable_conv2_pointwise`` end point).
    """

    def __init__(
        self,
        in_chs: int,
        spec: BlockSpec,
        stride: int,
        dilation: int,
        mid_activation: MidActivation = None,
        order: Order = "depthwise_first",
        residual: bool = True,
        segments: Segments = "all",
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
        tap: Tap = "activated",
    ) -> None:
        super().__init__()
        self.pre_act = spec.pre_act
        self.raw_tap = tap == "raw"
        self.tap_only = False
        self.residual = residual and spec.skip
        mid = _ACTIVATIONS[mid_activation] if mid_activation else None
        if not spec.pre_act:
            mid = mid or relu
        out = None if spec.pre_act else relu
        chs = (in_chs, *spec.out_chs)
        self.convs = nn.ModuleList(
            SeparableConv(chs[i], chs[i + 1], stride if i == 2 else 1, dilation, mid, out, order, segments, norm_layer)
            for i in range(3)
        )
        # The shortcut follows the spec, not the applied stride: parameters never depend on output_stride.
        needs_projection = spec.out_chs[-1] != in_chs or spec.stride != 1
        self.shortcut = (
            nn.Sequential(
                OrderedDict(
                    conv=nn.Conv2d(in_chs, spec.out_chs[-1], 1, stride, bias=False), bn=norm_layer(spec.out_chs[-1])
                )
            )
            if self.residual and needs_projection
            else None
        )

    def forward_with_tap(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The block output and the input of its last separable conv (DeepLab's feature tap)."""
        y = tap = x
        for i, conv in enumerate(self.convs):
            raw = y
            if self.pre_act:  # in place after the first conv: only the block's input is read again (residual)
                y = torch.relu(y) if i == 0 or (i == 2 and self.raw_tap) else torch.relu_(y)
            tap = raw if self.raw_tap else y
            y = conv(y)
        if self.tap_only:  # cut after its second conv (see drop_after_tap): the tap is all it computes
            return y, y if self.raw_tap or not self.pre_act else torch.relu(y)
        if self.residual:
            y = y + (self.shortcut(x) if self.shortcut is not None else x)
        return y, tap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_tap(x)[0]

    def drop_after_tap(self) -> None:
        """Remove the last separable conv and the shortcut: the block then only computes its tap."""
        self.convs = self.convs[:2]
        self.shortcut, self.residual, self.tap_only = None, False, True


def scale_channels(chs: int, width: float, divisor: int) -> int:
    """``chs * width`` rounded to a multiple of ``divisor`` (at least ``divisor``); ``chs`` when width is 1."""
    if width == 1.0:
        return chs
    return max(divisor, int(round(chs * width / divisor)) * divisor)


class AlignedXception(Encoder):
    """Modified aligned Xception (DeepLabV3+) built from block specs.

    Args:
        specs: the blocks, e.g. :data:`XCEPTION65`.
        output_stride: reduction of the deepest feature: 8, 16 or 32.
        in_channels: channels of the input image.
        width: channel multiplier (e.g. 0.125 for a tiny variant); channels are rounded to a multiple of 8, or of
            ``lcm(8, segments)``.
        mid_activation: None (published: nothing between the two stages in the pre-activated units, ReLU in the
            last exit unit), "relu" or "elu" between the two stages of every separable conv: the Xception paper's
            Fig. 10 (none converges fastest and best, ELU next, ReLU last).
        order: "depthwise_first" (published) or "pointwise_first" (the paper's "extreme" Inception module,
            Fig. 4; the paper argues the order matters little when the units are stacked).
        residual: True (published) or False (no residual connections): the paper's Fig. 9 (residual
            connections speed up convergence and raise the final accuracy).
        segments: groups of the 3x3 convs, the paper's spectrum between regular and depthwise separable
            convolutions (section 1.2): "all" (published: depthwise), or an int from 1 (regular 3x3 conv) that
            divides every 3x3 conv's channels. The paper leaves the intermediate points untested.
        norm_layer: normalisation class (default BatchNorm2d with eps 1e-3).
        tap: what the strided blocks hand the decoders: "activated" (the ReLU'd input of their last
            separable conv) or "raw" (the same before the ReLU, as TF DeepLab's decoder reads it).
    """

    def __init__(
        self,
        specs: tuple[BlockSpec, ...],
        *,
        output_stride: int = 32,
        in_channels: int = 3,
        width: float = 1.0,
        mid_activation: MidActivation = None,
        order: Order = "depthwise_first",
        residual: bool = True,
        segments: Segments = "all",
        norm_layer: type[nn.Module] = BATCH_NORM,
        tap: Tap = "activated",
    ) -> None:
        super().__init__()
        _check_args(output_stride, width, mid_activation, order, segments)
        if tap not in ("activated", "raw"):
            raise ValueError(f"tap must be 'activated' or 'raw', got {tap!r}")
        self.output_stride, self.mean, self.std, self.size_divisor = output_stride, XCEPTION_MEAN, XCEPTION_STD, 32
        ch = partial(scale_channels, width=width, divisor=8 if segments == "all" else math.lcm(8, segments))
        self.stem = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(in_channels, ch(32), 3, 2, 1, bias=False),
                bn1=norm_layer(ch(32)),
                act1=nn.ReLU(inplace=True),
                conv2=nn.Conv2d(ch(32), ch(64), 3, 1, 1, bias=False),
                bn2=norm_layer(ch(64)),
                act2=nn.ReLU(inplace=True),
            )
        )
        in_chs, reduction, dilation = ch(64), 2, 1
        self.blocks = nn.ModuleList()
        self.feature_info, self._taps = [], []
        for i, spec in enumerate(specs):
            spec = BlockSpec(tuple(ch(c) for c in spec.out_chs), spec.stride, spec.skip, spec.pre_act)
            _check_segments(in_chs, spec, order, segments)
            block_dilation, stride = dilation, spec.stride
            if spec.stride > 1:
                self.feature_info.append(FeatureInfo(spec.out_chs[1], reduction))
                self._taps.append(i)
                if reduction * spec.stride > output_stride:
                    dilation, stride = dilation * spec.stride, 1
                else:
                    reduction *= spec.stride
            ablation = {"mid_activation": mid_activation, "order": order, "residual": residual, "segments": segments}
            block = XceptionBlock(in_chs, spec, stride, block_dilation, **ablation, norm_layer=norm_layer, tap=tap)
            self.blocks.append(block)
            in_chs = spec.out_chs[-1]
        self.feature_info.append(FeatureInfo(in_chs, reduction))
        self._num_features = len(self.feature_info)

    def truncate(self, num_features: int) -> None:
        if num_features >= len(self.feature_info):
            return
        last = self._taps[num_features - 1]
        self.blocks = self.blocks[: last + 1]
        self.blocks[last].drop_after_tap()
        self.feature_info = self.feature_info[:num_features]
        self._num_features = num_features

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        features: list[torch.Tensor] = []
        for i, block in enumerate(self.blocks):
            if i in self._taps:
                x, tap = block.forward_with_tap(x)
                features.append(tap)
            else:
                x = block(x)
        if len(features) < self._num_features:  # truncated encoders end on a tap
            features.append(x)
        return features


def _check_args(output_stride: int, width: float, mid_activation: object, order: object, segments: object) -> None:
    check_build_args(output_stride, width)
    if mid_activation is not None and mid_activation not in _ACTIVATIONS:
        raise ValueError(f"mid_activation must be None, 'relu' or 'elu', got {mid_activation!r}")
    if order not in ("depthwise_first", "pointwise_first"):
        raise ValueError(f"order must be 'depthwise_first' or 'pointwise_first', got {order!r}")
    if segments != "all" and not (isinstance(segments, int) and not isinstance(segments, bool) and segments >= 1):
        raise ValueError(f"segments must be 'all' or an int >= 1, got {segments!r}")


def _check_segments(in_chs: int, spec: BlockSpec, order: Order, segments: Segments) -> None:
    """The 3x3 convs run on each conv's input channels (depthwise first) or output channels (pointwise first)."""
    chs = (in_chs, *spec.out_chs)
    spatial = chs[:3] if order == "depthwise_first" else chs[1:]
    for c in spatial:
        if segments != "all" and c % segments:
            raise ValueError(f"segments={segments} does not divide the 3x3 conv's {c} channels (block {spec})")


# timm key -> zoo key, applied in order (first match wins). Keys that match nothing are reported.
TIMM_TO_ZOO = (
    (r"^stem\.0\.conv\.", "stem.conv1."),
    (r"^stem\.0\.bn\.", "stem.bn1."),
    (r"^stem\.1\.conv\.", "stem.conv2."),
    (r"^stem\.1\.bn\.", "stem.bn2."),
    # conv index k -> convs.{k-1}
    (r"^blocks\.(\d+)\.stack\.conv(\d)\.(conv_dw|bn_dw|conv_pw|bn_pw)\.", lambda m: _block_conv(m)),
    (r"^blocks\.(\d+)\.shortcut\.(conv|bn)\.", r"blocks.\1.shortcut.\2."),
)
TIMM_DROPPED = (r"^head\.",)


def _block_conv(m: re.Match) -> str:
    return f"blocks.{m[1]}.convs.{int(m[2]) - 1}.{m[3]}."


def convert_timm_aligned(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert a timm ``xception41/65/71`` state dict to the zoo layout (the classifier is dropped).

    Args:
        state_dict: keys as in ``timm.create_model("xception65").state_dict()``.

    Returns:
        The same tensors under zoo keys; keys that match no rule are kept unchanged (so that loading
        reports them as unexpected).
    """
    return rename_keys(state_dict, TIMM_TO_ZOO, TIMM_DROPPED)


def build_aligned_xception(
    name: str,
    *,
    output_stride: int = 32,
    weights: str | Path | None = None,
    in_channels: int = 3,
    **kwargs,
) -> AlignedXception:
    """Build ``xception41``, ``xception65`` or ``xception71``.

    Args:
        name: the variant.
        output_stride: 8, 16 or 32.
        weights: None, "imagenet" (timm's weights through the Hugging Face Hub), a path to a timm
            state dict (``.pth``/``.safetensors``) of the same variant, or a TF DeepLab backbone
            (``"deeplab-tf:xception65_imagenet"``, ``zoo.list_pretrained()``).
        in_channels: channels of the input image (3 when loading weights).
        **kwargs: :class:`AlignedXception` arguments (``width``, ``mid_activation``, ``order``,
            ``residual``, ``segments``, ``tap``).
    """
    source = weight_source(weights)
    if weights is None:
        state = None
    elif source is not None:  # e.g. TF DeepLab's ImageNet backbones, converted ("deeplab-tf:xception65_imagenet")
        state = source.encoder_state(str(weights), name)
    else:
        state = convert_timm_aligned(fetch_timm_state_dict(name, weights))
    build = partial(AlignedXception, SPECS[name], output_stride=output_stride, in_channels=in_channels, **kwargs)
    return build_with_weights(build, state, f"{weights} ({name})")
