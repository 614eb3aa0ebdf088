"""Chollet's original Xception (``xception``): max-pooling entry and exit flows, 8 middle blocks.

With ``stem_padding="valid"`` equal to timm's ``legacy_xception`` (weights convert with
:func:`convert_timm_legacy`): the two stem convs are unpadded, as in Chollet's network. The default, "same",
pads them (as smp's port does) so that every feature has an exact reduction (``ceil(size / reduction)``) and its
grid is aligned with the input's, which a segmentation decoder needs to put its upsampled logits back on the
pixels; the weights are the same either way (only the borders of the stem see a difference). Unlike smp's port
it dilates: at output stride 16 or 8 a pooling stride that would overshoot becomes stride 1 and every later
block is dilated instead.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from zoo.encoders.base import Encoder, FeatureInfo, check_build_args
from zoo.encoders.weights import build_with_weights, fetch_timm_state_dict, rename_keys
from zoo.encoders.xception_aligned import scale_channels

StemPadding = Literal["same", "valid"]


@dataclass(frozen=True)
class LegacySpec:
    """One block: ``reps`` x (ReLU, separable conv, BN), then a 3x3 max pool if strided.

    Args:
        out_chs: output channels.
        reps: number of separable convs.
        stride: stride of the closing max pool (and of the 1x1 shortcut); 1 for no pool.
        start_with_relu: whether the first separable conv is preceded by a ReLU.
        grow_first: channels grow at the first conv (True) or at the last (False).
    """

    out_chs: int
    reps: int
    stride: int = 1
    start_with_relu: bool = True
    grow_first: bool = True


XCEPTION = (
    LegacySpec(128, 2, 2, start_with_relu=False),
    LegacySpec(256, 2, 2),
    LegacySpec(728, 2, 2),
    *(LegacySpec(728, 3),) * 8,
    LegacySpec(1024, 2, 2, grow_first=False),
)


class SeparableConv(nn.Sequential):
    """Depthwise then pointwise conv, no normalisation in between (Chollet's layout).

    Args:
        in_chs: input channels.
        out_chs: output channels.
        dilation: dilation of the depthwise conv.
    """

    def __init__(self, in_chs: int, out_chs: int, dilation: int = 1) -> None:
        super().__init__(
            OrderedDict(
                conv_dw=nn.Conv2d(in_chs, in_chs, 3, 1, dilation, dilation, groups=in_chs, bias=False),
                conv_pw=nn.Conv2d(in_chs, out_chs, 1, bias=False),
            )
        )


class LegacyBlock(nn.Module):
    """A residual Xception block with a max-pooling downsample.

    Args:
        in_chs: input channels.
        spec: the block's layout.
        stride: the pooling stride applied (1 where the output stride turned it into dilation).
        dilation: dilation of the separable convs.
    """

    def __init__(self, in_chs: int, spec: LegacySpec, stride: int, dilation: int) -> None:
        super().__init__()
        self.start_with_relu = spec.start_with_relu
        grow = spec.out_chs if spec.grow_first else in_chs
        chs = [in_chs, *[grow] * (spec.reps - 1), spec.out_chs]
        self.convs = nn.ModuleList(SeparableConv(chs[i], chs[i + 1], dilation) for i in range(spec.reps))
        self.bns = nn.ModuleList(nn.BatchNorm2d(c) for c in chs[1:])
        self.pool = nn.MaxPool2d(3, stride, 1) if spec.stride > 1 else nn.Identity()
        needs_projection = spec.out_chs != in_chs or spec.stride != 1
        self.shortcut = (
            nn.Sequential(
                OrderedDict(
                    conv=nn.Conv2d(in_chs, spec.out_chs, 1, stride, bias=False), bn=nn.BatchNorm2d(spec.out_chs)
                )
            )
            if needs_projection
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns, strict=True)):
            if i > 0 or self.start_with_relu:
                y = torch.relu(y)
            y = bn(conv(y))
        return self.pool(y) + self.shortcut(x)


class LegacyXception(Encoder):
    """Chollet's Xception as an encoder, dilatable to output stride 16 and 8.

    Taps: the stem (reduction 2), the ReLU'd input of every later strided block, and the final ReLU.

    Args:
        output_stride: reduction of the deepest feature: 8, 16 or 32.
        in_channels: channels of the input image.
        width: channel multiplier (e.g. 0.125 for a tiny variant); channels are rounded to a multiple of 8.
        specs: the blocks between stem and exit convs (default: :data:`XCEPTION`).
        stem_padding: "same" (default: exact reductions, feature grids aligned with the input) or "valid"
            (Chollet's unpadded stem convs: timm's ``legacy_xception`` exactly; on a 97x131 input the deepest
            feature is 3x4 instead of 4x5).
    """

    def __init__(
        self,
        *,
        output_stride: int = 32,
        in_channels: int = 3,
        width: float = 1.0,
        specs: tuple[LegacySpec, ...] = XCEPTION,
        stem_padding: StemPadding = "same",
    ) -> None:
        super().__init__()
        check_build_args(output_stride, width, stem_padding)
        pad = 1 if stem_padding == "same" else 0
        ch = partial(scale_channels, width=width, divisor=8)
        self.output_stride, self.mean, self.std, self.size_divisor = output_stride, (0.5,) * 3, (0.5,) * 3, 32
        self.stem = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(in_channels, ch(32), 3, 2, pad, bias=False),
                bn1=nn.BatchNorm2d(ch(32)),
                act1=nn.ReLU(inplace=True),
                conv2=nn.Conv2d(ch(32), ch(64), 3, 1, pad, bias=False),
                bn2=nn.BatchNorm2d(ch(64)),
                act2=nn.ReLU(inplace=True),
            )
        )
        in_chs, reduction, dilation = ch(64), 2, 1
        self.feature_info, self._taps = [FeatureInfo(in_chs, 2)], []
        self.blocks = nn.ModuleList()
        for i, spec in enumerate(specs):
            spec = replace(spec, out_chs=ch(spec.out_chs))
            block_dilation, stride = dilation, spec.stride
            if spec.stride > 1:
                if i > 0:
                    self.feature_info.append(FeatureInfo(in_chs, reduction))
                    self._taps.append(i)
                if reduction * spec.stride > output_stride:
                    dilation, stride = dilation * spec.stride, 1
                else:
                    reduction *= spec.stride
            self.blocks.append(LegacyBlock(in_chs, spec, stride, block_dilation))
            in_chs = spec.out_chs
        self.tail = nn.Sequential(
            OrderedDict(
                sep1=SeparableConv(in_chs, ch(1536), dilation),
                bn1=nn.BatchNorm2d(ch(1536)),
                act1=nn.ReLU(inplace=True),
                sep2=SeparableConv(ch(1536), ch(2048), dilation),
                bn2=nn.BatchNorm2d(ch(2048)),
                act2=nn.ReLU(inplace=True),
            )
        )
        self.feature_info.append(FeatureInfo(ch(2048), reduction))

    def truncate(self, num_features: int) -> None:
        if num_features >= len(self.feature_info):
            return
        self.blocks = self.blocks[: self._taps[num_features - 2]] if num_features > 1 else self.blocks[:0]
        self.tail = nn.ReLU() if num_features > 1 else None  # the next tap: the last kept block's output, ReLU'd
        self.feature_info = self.feature_info[:num_features]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        features = [x]
        for i, block in enumerate(self.blocks):
            if i in self._taps:
                features.append(torch.relu(x))
            x = block(x)
        if self.tail is not None:
            features.append(self.tail(x))
        return features


def _rep(m: re.Match) -> str:
    block, index, rest = int(m[1]) - 1, int(m[2]) // 3, m[3]
    if rest.startswith("conv1.") or rest.startswith("pointwise."):
        kind = "conv_dw" if rest.startswith("conv1.") else "conv_pw"
        return f"blocks.{block}.convs.{index}.{kind}.{rest.split('.', 1)[1]}"
    return f"blocks.{block}.bns.{index}.{rest}"


# timm key -> zoo key (first match wins); a replacement may be a function of the match.
TIMM_TO_ZOO = (
    (r"^(conv1|bn1|conv2|bn2)\.(.*)$", r"stem.\1.\2"),
    (r"^block(\d+)\.rep\.(\d+)\.(.*)$", _rep),  # rep index j: (ReLU, sep, BN) triplets -> conv/BN j // 3
    (r"^block(\d+)\.skip\.(.*)$", lambda m: f"blocks.{int(m[1]) - 1}.shortcut.conv.{m[2]}"),
    (r"^block(\d+)\.skipbn\.(.*)$", lambda m: f"blocks.{int(m[1]) - 1}.shortcut.bn.{m[2]}"),
    (r"^conv3\.conv1\.(.*)$", r"tail.sep1.conv_dw.\1"),
    (r"^conv3\.pointwise\.(.*)$", r"tail.sep1.conv_pw.\1"),
    (r"^conv4\.conv1\.(.*)$", r"tail.sep2.conv_dw.\1"),
    (r"^conv4\.pointwise\.(.*)$", r"tail.sep2.conv_pw.\1"),
    (r"^bn3\.(.*)$", r"tail.bn1.\1"),
    (r"^bn4\.(.*)$", r"tail.bn2.\1"),
)
TIMM_DROPPED = (r"^fc\.",)


def convert_timm_legacy(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert a timm ``legacy_xception`` state dict to the zoo layout (the classifier ``fc`` is dropped).

    Args:
        state_dict: keys as in ``timm.create_model("legacy_xception").state_dict()``.

    Returns:
        The same tensors under zoo keys; keys that match no rule are kept unchanged (reported on loading).
    """
    return rename_keys(state_dict, TIMM_TO_ZOO, TIMM_DROPPED)


def build_legacy_xception(
    *,
    output_stride: int = 32,
    weights: str | Path | None = None,
    in_channels: int = 3,
    width: float = 1.0,
    stem_padding: StemPadding = "same",
) -> LegacyXception:
    """Build ``xception`` (Chollet's original).

    Args:
        output_stride: 8, 16 or 32.
        weights: None, "imagenet" (timm's ``legacy_xception`` weights through the Hub), or a path to a timm
            ``legacy_xception`` state dict (``.pth``/``.safetensors``).
        in_channels: channels of the input image (3 when loading weights).
        width: channel multiplier (1.0 for the published model).
        stem_padding: "same" (default, exact reductions) or "valid" (Chollet's network exactly).
    """
    kwargs = {"output_stride": output_stride, "in_channels": in_channels, "width": width, "stem_padding": stem_padding}
    state = None if weights is None else convert_timm_legacy(fetch_timm_state_dict("legacy_xception", weights))
    return build_with_weights(partial(LegacyXception, **kwargs), state, f"{weights} (xception)")
