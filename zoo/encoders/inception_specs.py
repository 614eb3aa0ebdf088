"""The Inception v1 (GoogLeNet) and Inception v3 networks as spec tables, read by :mod:`zoo.encoders.inception`.

Each network is a tuple of stages: a conv-BN-ReLU (:class:`Conv`), a pooling (:class:`Pool`) or an Inception
module (:class:`Mixed`: parallel :class:`Branch` es concatenated along channels). Every spec carries its name in
the published network, so the weight converters are key mappings derived from the same tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Conv:
    """A conv (no bias), BatchNorm and ReLU.

    Args:
        out_chs: output channels.
        kernel: kernel height and width (Inception v3 factorises n x n into 1 x n and n x 1).
        stride: conv stride.
        valid: unpadded in the published network (padded anyway with ``stem_padding="same"``).
        name: the module's name in the published network (for weight conversion).
    """

    out_chs: int
    kernel: tuple[int, int] = (1, 1)
    stride: int = 1
    valid: bool = False
    name: str = ""


@dataclass(frozen=True)
class Pool:
    """A max or average pooling.

    Args:
        kind: "max" or "avg".
        kernel: square kernel size.
        stride: pooling stride.
        valid: unpadded in the published network (padded anyway with ``stem_padding="same"``).
        ceil_mode: the published network's rounding of unpadded poolings (GoogLeNet rounds up).
        name: the module's name in the published network.
    """

    kind: Literal["max", "avg"] = "max"
    kernel: int = 3
    stride: int = 1
    valid: bool = False
    ceil_mode: bool = False
    name: str = ""


@dataclass(frozen=True)
class Branch:
    """One path of an Inception module: layers in sequence, then optionally parallel convs concatenated.

    Args:
        layers: the sequence.
        split: convs applied side by side to the sequence's output (Inception v3's expanded filter bank: 1x3
            and 3x1 in parallel); empty for none.
    """

    layers: tuple[Conv | Pool, ...]
    split: tuple[Conv, ...] = ()


@dataclass(frozen=True)
class Mixed:
    """An Inception module: its branches run on the same input and are concatenated along channels.

    Args:
        branches: the branches, in the published concatenation order.
        name: the module's name in the published network.
    """

    branches: tuple[Branch, ...]
    name: str = ""


Stage = Conv | Pool | Mixed


def _conv(
    out_chs: int, kernel: int | tuple[int, int] = 1, stride: int = 1, valid: bool = False, name: str = ""
) -> Conv:
    return Conv(out_chs, kernel if isinstance(kernel, tuple) else (kernel, kernel), stride, valid, name)


def _seq(*layers: Conv | Pool, split: tuple[Conv, ...] = ()) -> Branch:
    return Branch(layers, split)


# ---------------------------------------------------------------- GoogLeNet (Szegedy et al. 2014), torchvision's port


def _googlenet_module(name: str, c1: int, c3r: int, c3: int, c5r: int, c5: int, pool: int) -> Mixed:
    """torchvision's Inception module; its "5x5" branch is a 3x3 conv, as in torchvision's ImageNet weights."""
    return Mixed(
        (
            _seq(_conv(c1, name="branch1")),
            _seq(_conv(c3r, name="branch2.0"), _conv(c3, 3, name="branch2.1")),
            _seq(_conv(c5r, name="branch3.0"), _conv(c5, 3, name="branch3.1")),
            _seq(Pool("max", 3, ceil_mode=True), _conv(pool, name="branch4.1")),
        ),
        name,
    )


def _googlenet_pool(name: str, kernel: int = 3) -> Pool:
    return Pool("max", kernel, 2, valid=True, ceil_mode=True, name=name)


GOOGLENET: tuple[Stage, ...] = (
    _conv(64, 7, 2, name="conv1"),
    _googlenet_pool("maxpool1"),
    _conv(64, 1, name="conv2"),
    _conv(192, 3, name="conv3"),
    _googlenet_pool("maxpool2"),
    _googlenet_module("inception3a", 64, 96, 128, 16, 32, 32),
    _googlenet_module("inception3b", 128, 128, 192, 32, 96, 64),
    _googlenet_pool("maxpool3"),
    _googlenet_module("inception4a", 192, 96, 208, 16, 48, 64),
    _googlenet_module("inception4b", 160, 112, 224, 24, 64, 64),
    _googlenet_module("inception4c", 128, 128, 256, 24, 64, 64),
    _googlenet_module("inception4d", 112, 144, 288, 32, 64, 64),
    _googlenet_module("inception4e", 256, 160, 320, 32, 128, 128),
    _googlenet_pool("maxpool4", kernel=2),
    _googlenet_module("inception5a", 256, 160, 320, 32, 128, 128),
    _googlenet_module("inception5b", 384, 192, 384, 48, 128, 128),
)

# ---------------------------------------------------------------- Inception v3 (Szegedy et al. 2015), timm/torchvision


def _avg_pool_branch(chs: int) -> Branch:
    return _seq(Pool("avg", 3), _conv(chs, name="branch_pool"))


def _inception_a(name: str, pool_chs: int) -> Mixed:
    """35x35 grid: a 5x5 branch and a 5x5 factorised into two 3x3."""
    return Mixed(
        (
            _seq(_conv(64, name="branch1x1")),
            _seq(_conv(48, name="branch5x5_1"), _conv(64, 5, name="branch5x5_2")),
            _seq(
                _conv(64, name="branch3x3dbl_1"),
                _conv(96, 3, name="branch3x3dbl_2"),
                _conv(96, 3, name="branch3x3dbl_3"),
            ),
            _avg_pool_branch(pool_chs),
        ),
        name,
    )


def _inception_c(name: str, c7: int) -> Mixed:
    """17x17 grid: 7x7 convs factorised into 1x7 and 7x1."""
    return Mixed(
        (
            _seq(_conv(192, name="branch1x1")),
            _seq(
                _conv(c7, name="branch7x7_1"),
                _conv(c7, (1, 7), name="branch7x7_2"),
                _conv(192, (7, 1), name="branch7x7_3"),
            ),
            _seq(
                _conv(c7, name="branch7x7dbl_1"),
                _conv(c7, (7, 1), name="branch7x7dbl_2"),
                _conv(c7, (1, 7), name="branch7x7dbl_3"),
                _conv(c7, (7, 1), name="branch7x7dbl_4"),
                _conv(192, (1, 7), name="branch7x7dbl_5"),
            ),
            _avg_pool_branch(192),
        ),
        name,
    )


def _inception_e(name: str) -> Mixed:
    """8x8 grid: expanded filter banks (1x3 and 3x1 side by side)."""
    return Mixed(
        (
            _seq(_conv(320, name="branch1x1")),
            _seq(
                _conv(384, name="branch3x3_1"),
                split=(_conv(384, (1, 3), name="branch3x3_2a"), _conv(384, (3, 1), name="branch3x3_2b")),
            ),
            _seq(
                _conv(448, name="branch3x3dbl_1"),
                _conv(384, 3, name="branch3x3dbl_2"),
                split=(_conv(384, (1, 3), name="branch3x3dbl_3a"), _conv(384, (3, 1), name="branch3x3dbl_3b")),
            ),
            _avg_pool_branch(192),
        ),
        name,
    )


# grid-size reductions: parallel stride-2 convs and a stride-2 max pooling, concatenated (no representational
# bottleneck, the paper's section 5)
MIXED_6A = Mixed(
    (
        _seq(_conv(384, 3, 2, valid=True, name="branch3x3")),
        _seq(
            _conv(64, name="branch3x3dbl_1"),
            _conv(96, 3, name="branch3x3dbl_2"),
            _conv(96, 3, 2, valid=True, name="branch3x3dbl_3"),
        ),
        _seq(Pool("max", 3, 2, valid=True)),
    ),
    "Mixed_6a",
)
MIXED_7A = Mixed(
    (
        _seq(_conv(192, name="branch3x3_1"), _conv(320, 3, 2, valid=True, name="branch3x3_2")),
        _seq(
            _conv(192, name="branch7x7x3_1"),
            _conv(192, (1, 7), name="branch7x7x3_2"),
            _conv(192, (7, 1), name="branch7x7x3_3"),
            _conv(192, 3, 2, valid=True, name="branch7x7x3_4"),
        ),
        _seq(Pool("max", 3, 2, valid=True)),
    ),
    "Mixed_7a",
)

INCEPTION_V3: tuple[Stage, ...] = (
    _conv(32, 3, 2, valid=True, name="Conv2d_1a_3x3"),
    _conv(32, 3, valid=True, name="Conv2d_2a_3x3"),
    _conv(64, 3, name="Conv2d_2b_3x3"),
    Pool("max", 3, 2, valid=True, name="Pool1"),
    _conv(80, 1, name="Conv2d_3b_1x1"),
    _conv(192, 3, valid=True, name="Conv2d_4a_3x3"),
    Pool("max", 3, 2, valid=True, name="Pool2"),
    _inception_a("Mixed_5b", 32),
    _inception_a("Mixed_5c", 64),
    _inception_a("Mixed_5d", 64),
    MIXED_6A,
    _inception_c("Mixed_6b", 128),
    _inception_c("Mixed_6c", 160),
    _inception_c("Mixed_6d", 160),
    _inception_c("Mixed_6e", 192),
    MIXED_7A,
    _inception_e("Mixed_7b"),
    _inception_e("Mixed_7c"),
)

SPECS = {"googlenet": GOOGLENET, "inception_v3": INCEPTION_V3}
