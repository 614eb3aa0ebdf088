"""Inception v1 (GoogLeNet) and Inception v3 as dilatable encoders, written as spec tables.

Each network is a tuple of stages: a conv-BN-ReLU (:class:`Conv`), a pooling (:class:`Pool`) or an Inception
module (:class:`Mixed`: parallel :class:`Branch` es concatenated along channels), in
:mod:`zoo.encoders.inception_specs`. One generic :class:`InceptionEncoder` reads the tables. Every spec carries
its name in the published network, so the weight converters are key mappings derived from the same tables.

``output_stride`` turns every stride that would overshoot it into dilation for all later stages, as in the
Xceptions; parameters never depend on it. ``stem_padding="same"`` (the default) pads the convs and poolings that
the published networks leave unpadded, so every feature has an exact reduction (``ceil(size / reduction)``) and
its grid is aligned with the input's; ``"valid"`` reproduces the published networks exactly (timm's and
torchvision's features, and their ImageNet weights' borders).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from zoo.encoders.base import Encoder, FeatureInfo, check_build_args
from zoo.encoders.inception_specs import GOOGLENET, INCEPTION_V3, SPECS, Branch, Conv, Mixed, Pool, Stage
from zoo.encoders.weights import (
    build_with_weights,
    fetch_timm_state_dict,
    fetch_torchvision_state_dict,
    rename_keys,
)
from zoo.encoders.xception_aligned import scale_channels

StemPadding = Literal["same", "valid"]
BATCH_NORM = partial(nn.BatchNorm2d, eps=1e-3)  # the published ports' epsilon


# ---------------------------------------------------------------- modules


class ConvBNReLU(nn.Sequential):
    """Conv (no bias), BatchNorm, ReLU: the published ``BasicConv2d`` (same ``conv``/``bn`` keys).

    Args:
        in_chs: input channels.
        spec: channels, kernel and stride.
        stride: the stride applied (1 where the output stride turned it into dilation).
        dilation: conv dilation.
        padding: conv padding (height, width).
        norm_layer: normalisation class called with the channel count.
    """

    def __init__(
        self,
        in_chs: int,
        spec: Conv,
        stride: int,
        dilation: int,
        padding: tuple[int, int],
        norm_layer: Callable[[int], nn.Module] = BATCH_NORM,
    ) -> None:
        super().__init__(
            OrderedDict(
                conv=nn.Conv2d(in_chs, spec.out_chs, spec.kernel, stride, padding, dilation, bias=False),
                bn=norm_layer(spec.out_chs),
                act=nn.ReLU(inplace=True),
            )
        )


class Concat(nn.ModuleList):
    """Modules applied to the same input, outputs concatenated along channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([m(x) for m in self], 1)


class MixedBlock(nn.Module):
    """An Inception module built from a :class:`Mixed` spec.

    Args:
        in_chs: input channels.
        spec: the branches.
        keep_stride: False where the output stride turned the module's stride into dilation.
        dilation: dilation of every conv (and max pooling) with a kernel larger than 1.
        stem_padding: "same" or "valid" (see :class:`InceptionEncoder`).
        norm_layer: normalisation class called with the channel count.
    """

    def __init__(
        self,
        in_chs: int,
        spec: Mixed,
        keep_stride: bool,
        dilation: int,
        stem_padding: StemPadding,
        norm_layer: Callable[[int], nn.Module],
    ) -> None:
        super().__init__()
        layer = partial(build_layer, keep_stride=keep_stride, dilation=dilation, stem_padding=stem_padding,
                        norm_layer=norm_layer)  # fmt: skip
        branches, self.out_chs = [], 0
        for branch in spec.branches:
            modules, chs = [], in_chs
            for s in branch.layers:
                modules.append(layer(chs, s))
                chs = s.out_chs if isinstance(s, Conv) else chs
            if branch.split:
                modules.append(Concat(layer(chs, s) for s in branch.split))
                chs = sum(s.out_chs for s in branch.split)
            branches.append(nn.Sequential(*modules))
            self.out_chs += chs
        self.branches = Concat(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branches(x)


def build_layer(
    in_chs: int,
    spec: Conv | Pool,
    *,
    keep_stride: bool,
    dilation: int,
    stem_padding: StemPadding,
    norm_layer: Callable[[int], nn.Module],
) -> nn.Module:
    """A conv-BN-ReLU or a pooling from its spec, strided only if ``keep_stride`` (strided layers are never dilated)."""
    stride = spec.stride if keep_stride else 1
    valid = spec.valid and stem_padding == "valid"
    if isinstance(spec, Conv):
        padding = (0, 0) if valid else tuple((k - 1) // 2 * dilation for k in spec.kernel)
        return ConvBNReLU(in_chs, spec, stride, dilation, padding, norm_layer)
    return _pool(spec, stride, dilation, valid)


def _pool(spec: Pool, stride: int, dilation: int, valid: bool) -> nn.Module:
    k = spec.kernel
    if spec.kind == "avg":  # no dilated average pooling in PyTorch: the 3x3 stride-1 ones stay local
        return nn.AvgPool2d(k, stride, 0 if valid else k // 2)
    if valid:
        return nn.MaxPool2d(k, stride, 0, dilation, ceil_mode=spec.ceil_mode)
    if stride > 1:  # strided layers are never dilated; both give ceil(size / stride)
        return nn.MaxPool2d(k, stride, (k - 1) // 2) if k % 2 else nn.MaxPool2d(k, stride, ceil_mode=True)
    total = (k - 1) * dilation  # stride 1 keeps the size: pad by -inf (MaxPool2d pads at most half its kernel)
    if total % 2 == 0 and total // 2 <= k // 2:
        return nn.MaxPool2d(k, 1, total // 2, dilation)
    pad = (total // 2, total - total // 2) * 2
    return nn.Sequential(nn.ConstantPad2d(pad, float("-inf")), nn.MaxPool2d(k, 1, 0, dilation))


def stage_stride(spec: Stage) -> int:
    """The reduction a stage applies: its own stride, or a module's largest."""
    if isinstance(spec, Mixed):
        return max(s.stride for b in spec.branches for s in (*b.layers, *b.split))
    return spec.stride


def scale_stage(spec: Stage, ch: Callable[[int], int]) -> Stage:
    """``spec`` with every conv's channels scaled by ``ch``."""
    if isinstance(spec, Pool):
        return spec
    if isinstance(spec, Conv):
        return Conv(ch(spec.out_chs), spec.kernel, spec.stride, spec.valid, spec.name)
    branches = tuple(
        Branch(tuple(scale_stage(s, ch) for s in b.layers), tuple(scale_stage(s, ch) for s in b.split))
        for b in spec.branches
    )
    return Mixed(branches, spec.name)


class InceptionEncoder(Encoder):
    """An Inception network as an encoder, dilatable to output stride 16 and 8.

    Taps: the input of every stage that reduces the resolution (from reduction 2 on), and the last stage's
    output: for Inception v3 timm's taps (Conv2d_2b, Conv2d_4a, Mixed_5d, Mixed_6e, Mixed_7c), for GoogLeNet
    conv1, conv3, inception3b, inception4e and inception5b.

    Args:
        stages: the network, e.g. :data:`INCEPTION_V3` or :data:`GOOGLENET`.
        output_stride: reduction of the deepest feature: 8, 16 or 32.
        in_channels: channels of the input image.
        width: channel multiplier (e.g. 0.125 for a tiny variant); channels are rounded to a multiple of 8.
        stem_padding: "same" (default: exact reductions, feature grids aligned with the input, any input size
            from 1x1) or "valid" (the published networks exactly; Inception v3 then needs inputs of at least 75x75
            and its features cover less than the whole image).
        norm_layer: normalisation class (default BatchNorm2d with eps 1e-3, as the published ports).
    """

    def __init__(
        self,
        stages: tuple[Stage, ...],
        *,
        output_stride: int = 32,
        in_channels: int = 3,
        width: float = 1.0,
        stem_padding: StemPadding = "same",
        norm_layer: Callable[[int], nn.Module] = BATCH_NORM,
    ) -> None:
        super().__init__()
        check_build_args(output_stride, width, stem_padding)
        self.output_stride, self.mean, self.std, self.size_divisor = output_stride, (0.5,) * 3, (0.5,) * 3, 32
        ch = partial(scale_channels, width=width, divisor=8)
        in_chs, reduction, dilation = in_channels, 1, 1
        self.stages = nn.ModuleList()
        self.feature_info, self._taps = [], []
        for i, spec in enumerate(stages):
            spec, stride, block_dilation = scale_stage(spec, ch), stage_stride(spec), dilation
            if stride > 1 and reduction > 1:
                self.feature_info.append(FeatureInfo(in_chs, reduction))
                self._taps.append(i)
            keep_stride = reduction * stride <= output_stride
            reduction, dilation = (reduction * stride, dilation) if keep_stride else (reduction, dilation * stride)
            stage, in_chs = self._build_stage(in_chs, spec, keep_stride, block_dilation, stem_padding, norm_layer)
            self.stages.append(stage)
        self.feature_info.append(FeatureInfo(in_chs, reduction))

    @staticmethod
    def _build_stage(
        in_chs: int,
        spec: Stage,
        keep_stride: bool,
        dilation: int,
        stem_padding: StemPadding,
        norm_layer: Callable[[int], nn.Module],
    ) -> tuple[nn.Module, int]:
        if isinstance(spec, Mixed):
            block = MixedBlock(in_chs, spec, keep_stride, dilation, stem_padding, norm_layer)
            return block, block.out_chs
        layer = build_layer(in_chs, spec, keep_stride=keep_stride, dilation=dilation, stem_padding=stem_padding,
                            norm_layer=norm_layer)  # fmt: skip
        return layer, spec.out_chs if isinstance(spec, Conv) else in_chs

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features: list[torch.Tensor] = []
        for i, stage in enumerate(self.stages):
            if i in self._taps:
                features.append(x)
            x = stage(x)
        features.append(x)
        return features

    def truncate(self, num_features: int) -> None:
        if num_features >= len(self.feature_info):
            return
        self.stages = self.stages[: self._taps[num_features - 1]]  # the last kept stage's output is the last tap
        self.feature_info = self.feature_info[:num_features]


# ---------------------------------------------------------------- weights


def published_names(stages: tuple[Stage, ...]) -> dict[str, str]:
    """Published module name -> zoo module name, for every conv of ``stages`` (read from the spec names)."""
    names = {}
    for i, spec in enumerate(stages):
        if isinstance(spec, Conv):
            names[spec.name] = f"stages.{i}"
        if not isinstance(spec, Mixed):
            continue
        for j, branch in enumerate(spec.branches):
            for k, layer in enumerate(branch.layers):
                if isinstance(layer, Conv):
                    names[f"{spec.name}.{layer.name}"] = f"stages.{i}.branches.{j}.{k}"
            for m, layer in enumerate(branch.split):
                names[f"{spec.name}.{layer.name}"] = f"stages.{i}.branches.{j}.{len(branch.layers)}.{m}"
    return names


def convert_published(
    state_dict: dict[str, torch.Tensor], stages: tuple[Stage, ...], dropped: tuple[str, ...]
) -> dict[str, torch.Tensor]:
    """Rename a published state dict (timm or torchvision) to the zoo layout of ``stages``.

    Args:
        state_dict: the published keys (e.g. ``Mixed_5b.branch5x5_1.conv.weight``).
        stages: the spec table whose names give the mapping.
        dropped: regexes of keys to drop (classifier, auxiliary heads).

    Returns:
        The same tensors under zoo keys; keys that match no rule are kept unchanged (reported on loading).
    """
    rules = [("^" + re.escape(name + "."), f"{zoo}.") for name, zoo in published_names(stages).items()]
    return rename_keys(state_dict, rules, dropped)


# the classifier and auxiliary heads have no place in an encoder
DROPPED = {"inception_v3": (r"^fc\.", r"^AuxLogits\."), "googlenet": (r"^fc\.", r"^aux1\.", r"^aux2\.")}


def convert_inception_v3(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert a timm or torchvision ``inception_v3`` state dict (same keys) to the zoo layout."""
    return convert_published(state_dict, INCEPTION_V3, DROPPED["inception_v3"])


def convert_googlenet(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert a torchvision ``googlenet`` state dict to the zoo layout."""
    return convert_published(state_dict, GOOGLENET, DROPPED["googlenet"])


CONVERTERS = {"inception_v3": convert_inception_v3, "googlenet": convert_googlenet}
# "imagenet": inception_v3 from timm (torchvision's weights, ported), googlenet from torchvision
FETCHERS = {
    "inception_v3": partial(fetch_timm_state_dict, "inception_v3"),
    "googlenet": partial(fetch_torchvision_state_dict, "googlenet"),
}


def build_inception(
    name: str,
    *,
    output_stride: int = 32,
    weights: str | Path | None = None,
    in_channels: int = 3,
    **kwargs,
) -> InceptionEncoder:
    """Build ``inception_v3`` or ``googlenet``.

    Args:
        name: the variant.
        output_stride: 8, 16 or 32.
        weights: None, "imagenet" (inception_v3: timm's weights through the Hugging Face Hub; googlenet:
            torchvision's), or a path to a timm/torchvision state dict (``.pth``/``.safetensors``) of the variant.
        in_channels: channels of the input image (3 when loading weights).
        **kwargs: :class:`InceptionEncoder` arguments (``width``, ``stem_padding``).
    """
    state = None if weights is None else CONVERTERS[name](FETCHERS[name](weights))
    build = partial(InceptionEncoder, SPECS[name], output_stride=output_stride, in_channels=in_channels, **kwargs)
    return build_with_weights(build, state, f"{weights} ({name})")
