"""Helpers shared by the test modules."""

from __future__ import annotations

import math

import torch
from torch import nn

import zoo
from zoo.encoders import ENCODERS
from zoo.encoders.base import Encoder, FeatureInfo


class TinyEncoder(Encoder):
    """Five 3x3 conv stages with reductions 2, 4, 8, 16, 32; a stride beyond ``output_stride`` becomes dilation."""

    def __init__(self, output_stride: int = 32, channels: tuple[int, ...] = (4, 6, 8, 10, 12)) -> None:
        super().__init__()
        self.output_stride = output_stride
        stages, info = [], []
        reduction, dilation, c_in = 1, 1, 3
        for c in channels:
            stride = 2 if reduction * 2 <= output_stride else 1
            dilation = dilation if stride == 2 else dilation * 2
            reduction *= stride
            conv = nn.Conv2d(c_in, c, 3, stride, padding=dilation, dilation=dilation, bias=False)
            stages.append(nn.Sequential(conv, nn.BatchNorm2d(c), nn.ReLU()))
            info.append(FeatureInfo(c, reduction))
            c_in = c
        self.stages = nn.ModuleList(stages)
        self.feature_info = info

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


def tiny_model(decoder: str = "deeplabv3plus", num_classes: int = 3, encoder: str = "xception65", **kwargs):
    """The suite's tiny model: a width-0.125 zoo Xception with ``decoder``, seeded, in train mode."""
    torch.manual_seed(0)
    return zoo.build_model(encoder, decoder, num_classes=num_classes, encoder_kwargs={"width": 0.125}, **kwargs)


def register_tiny_encoder(monkeypatch) -> str:
    """Register :class:`TinyEncoder` as the encoder ``tiny-test`` for one test (``monkeypatch`` undoes it)."""
    monkeypatch.setitem(
        ENCODERS._entries, "tiny-test", lambda output_stride, weights, in_channels: TinyEncoder(output_stride)
    )
    return "tiny-test"


def decisive(model: nn.Module, num_classes: int) -> nn.Module:
    """``model`` with its classifier scaled up, so that its logits are far from ties (random init: ~1e-5 apart)."""
    with torch.no_grad():
        for module in model.decoder.modules():
            if isinstance(module, nn.Conv2d) and module.out_channels == num_classes:
                module.weight.mul_(1e4)
    return model


def randomise(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Random values everywhere (BN statistics included, variances positive) so equality tests mean something."""
    g = torch.Generator().manual_seed(0)
    out = {}
    for k, v in state.items():
        if not v.is_floating_point():
            out[k] = torch.zeros(v.shape, dtype=v.dtype)
        elif k.endswith("running_var"):
            out[k] = torch.rand(v.shape, generator=g) + 0.5
        else:
            out[k] = torch.randn(v.shape, generator=g) * (0.5 if v.dim() == 1 else 1.0 / math.sqrt(v[0].numel()))
    return out


def max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()
