"""Decoders on a tiny fake encoder: output reductions, features picked by reduction, structure, init, errors."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import TinyEncoder
from torch import nn

from zoo import list_decoders
from zoo.decoders import DECODERS
from zoo.decoders.auxiliary import FCNHead, aux_tap_index
from zoo.decoders.base import tap_index
from zoo.decoders.deeplabv3 import DeepLabV3Decoder
from zoo.decoders.deeplabv3plus import DeepLabV3PlusDecoder
from zoo.decoders.fcn import FCNDecoder
from zoo.decoders.unet import UNetDecoder
from zoo.encoders.base import FeatureInfo
from zoo.layers import ASPP, ConvBNAct, SeparableConvBNAct, atrous_rates_for, init_weights, resize_to

pytestmark = pytest.mark.usefixtures("one_thread")


def features_for(info: list[FeatureInfo], size: int = 64, batch: int = 2) -> list[torch.Tensor]:
    torch.manual_seed(0)
    return [torch.randn(batch, f.channels, size // f.reduction, size // f.reduction) for f in info]


# decoder -> reduction of its logits, given the encoder's output stride
LOGIT_REDUCTION = {
    "deeplabv3plus": lambda os: 4,
    "deeplabv3": lambda os: os,
    "dpc": lambda os: 4,
    "fcn": lambda os: min(8, os),
    "lraspp": lambda os: 8,
    "unet": lambda os: 2,
}


def test_registered_names():
    assert list_decoders() == ["deeplabv3", "deeplabv3plus", "dpc", "fcn", "lraspp", "unet"] == sorted(LOGIT_REDUCTION)
    with pytest.raises(KeyError, match="unknown decoder 'pspnet'; valid names: deeplabv3, deeplabv3plus, dpc, fcn"):
        DECODERS.get("pspnet")


def test_tiny_encoder_repeats_reductions():
    assert TinyEncoder(16).reductions() == [2, 4, 8, 16, 16]
    assert TinyEncoder(8).reductions() == [2, 4, 8, 8, 8]
    for os in (8, 16, 32):
        enc = TinyEncoder(os)
        feats = enc(torch.randn(1, 3, 64, 64))
        assert [64 // f.shape[-1] for f in feats] == enc.reductions()


@pytest.mark.parametrize("output_stride", [8, 16, 32])
@pytest.mark.parametrize("name", sorted(LOGIT_REDUCTION))
def test_logits_reduction_and_backward(name, output_stride):
    encoder = TinyEncoder(output_stride)
    decoder = DECODERS.get(name)(encoder.feature_info, 5, output_stride)
    x = torch.randn(2, 3, 64, 96, requires_grad=True)
    logits = decoder(encoder(x))
    r = LOGIT_REDUCTION[name](output_stride)
    assert logits.shape == (2, 5, 64 // r, 96 // r)
    logits.mean().backward()
    assert encoder.stages[0][0].weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in decoder.parameters() if p.requires_grad)


def test_tap_index_by_reduction():
    info = [FeatureInfo(3, 1), FeatureInfo(5, 2), FeatureInfo(7, 4), FeatureInfo(9, 16), FeatureInfo(11, 16)]
    assert tap_index(info, 4) == 2
    assert tap_index(info, 16) == 4 and tap_index(info, "deepest") == 4
    with pytest.raises(ValueError, match=r"no feature at reduction 8; its reductions are \[1, 2, 4, 16, 16\]"):
        tap_index(info, 8)


def test_deeplabv3plus_takes_the_stride4_tap_wherever_it_is():
    # two encoders whose stride-4 tap sits at different list positions
    for info in (
        [FeatureInfo(6, 4), FeatureInfo(8, 8), FeatureInfo(10, 16), FeatureInfo(12, 16)],
        [FeatureInfo(3, 1), FeatureInfo(4, 2), FeatureInfo(6, 4), FeatureInfo(10, 16)],
    ):
        decoder = DeepLabV3PlusDecoder(info, 3, 16)
        assert decoder.low_level.conv.in_channels == 6
        assert decoder.aspp.branches[0].conv.in_channels == info[-1].channels
        assert decoder(features_for(info)).shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="no feature at reduction 4"):
        DeepLabV3PlusDecoder([FeatureInfo(8, 8), FeatureInfo(10, 16)], 3, 16)


@pytest.mark.parametrize("output_stride, rates", [(8, (12, 24, 36)), (16, (6, 12, 18)), (32, (3, 6, 9))])
def test_deeplabv3plus_rates_follow_output_stride(output_stride, rates):
    decoder = DeepLabV3PlusDecoder(TinyEncoder(output_stride).feature_info, 3, output_stride)
    atrous = [b.depthwise.conv for b in decoder.aspp.branches[1:4]]
    assert tuple(c.dilation[0] for c in atrous) == rates == atrous_rates_for(output_stride)
    assert tuple(c.padding[0] for c in atrous) == rates
    custom = DeepLabV3PlusDecoder(TinyEncoder(16).feature_info, 3, 16, atrous_rates=(2, 4, 6))
    assert [b.depthwise.conv.dilation[0] for b in custom.aspp.branches[1:4]] == [2, 4, 6]
    with pytest.raises(ValueError, match="output_stride must be one of 8, 16, 32"):
        atrous_rates_for(4)


def test_deeplabv3plus_structure_follows_the_paper():
    info = [FeatureInfo(32, 4), FeatureInfo(64, 16)]
    decoder = DeepLabV3PlusDecoder(info, 21, 16)
    aspp = decoder.aspp
    assert len(aspp.branches) == 5 and aspp.project.conv.in_channels == 5 * 256
    assert aspp.dropout.p == 0.1
    assert isinstance(aspp.branches[0], ConvBNAct) and aspp.branches[0].conv.kernel_size == (1, 1)
    assert decoder.low_level.conv.out_channels == 48 and decoder.low_level.conv.kernel_size == (1, 1)
    assert len(decoder.refine) == 2
    first, second = decoder.refine
    assert isinstance(first, SeparableConvBNAct) and first.depthwise.conv.in_channels == 256 + 48
    assert first.pointwise.conv.out_channels == 256 and second.pointwise.conv.out_channels == 256
    assert decoder.classifier.kernel_size == (1, 1) and decoder.classifier.out_channels == 21
    plain = DeepLabV3PlusDecoder(info, 21, 16, separable=False)
    assert all(isinstance(m, ConvBNAct) and m.conv.groups == 1 for m in plain.refine)
    assert all(isinstance(b, ConvBNAct) and b.conv.kernel_size == (3, 3) for b in plain.aspp.branches[1:4])


def test_separable_conv_is_depthwise_bn_relu_then_pointwise_bn_relu():
    block = SeparableConvBNAct(8, 16, 3, dilation=2)
    dw, pw = block.depthwise, block.pointwise
    assert dw.conv.groups == 8 and dw.conv.weight.shape == (8, 1, 3, 3) and dw.conv.dilation == (2, 2)
    assert pw.conv.weight.shape == (16, 8, 1, 1)
    assert all(isinstance(m.bn, nn.BatchNorm2d) and isinstance(m.act, nn.ReLU) for m in (dw, pw))
    assert block(torch.randn(1, 8, 9, 11)).shape == (1, 16, 9, 11)


def test_aspp_matches_a_hand_computation():
    torch.manual_seed(0)
    aspp = ASPP(4, 6, (1, 2, 3), separable=False, dropout=0.1).eval()
    x = torch.randn(1, 4, 7, 9)
    pooled = aspp.branches[4].conv(x.mean((2, 3), keepdim=True)).expand(-1, -1, 7, 9)
    branches = [aspp.branches[i](x) for i in range(4)] + [pooled]
    expected = aspp.project(torch.cat(branches, 1))
    torch.testing.assert_close(aspp(x), expected)


def test_deeplabv3_head():
    info = TinyEncoder(16).feature_info
    decoder = DeepLabV3Decoder(info, 4, 16)
    assert isinstance(decoder.conv, ConvBNAct) and decoder.conv.conv.kernel_size == (3, 3)
    assert [b.conv.dilation[0] for b in decoder.aspp.branches[1:4]] == [6, 12, 18]
    assert isinstance(DeepLabV3Decoder(info, 4, 16, separable=True).conv, SeparableConvBNAct)


@pytest.mark.parametrize(
    "output_stride, variant, skip_reductions",
    [
        (32, "8s", [16, 8]),
        (32, "16s", [16]),
        (32, "32s", []),
        (16, "8s", [8]),  # the stride-16 stream is the deepest tap
        (16, "16s", []),
        (8, "8s", []),
    ],
)
def test_fcn_scores_the_taps_the_encoder_gives(output_stride, variant, skip_reductions):
    info = TinyEncoder(output_stride).feature_info
    decoder = FCNDecoder(info, 3, output_stride, variant=variant)
    assert [info[i].reduction for i in decoder.skip_indices] == skip_reductions
    assert len(decoder.scores) == len(skip_reductions)
    finest = min([output_stride, *skip_reductions])
    assert decoder(features_for(info)).shape == (2, 3, 64 // finest, 64 // finest)


def test_fcn8s_sums_upsampled_scores():
    info = TinyEncoder(32).feature_info
    decoder = FCNDecoder(info, 3, 32).eval()
    feats = features_for(info)
    deep = decoder.head(feats[4])
    s16 = decoder.scores[0](feats[3])
    s8 = decoder.scores[1](feats[2])
    expected = resize_to(resize_to(deep, s16) + s16, s8) + s8
    torch.testing.assert_close(decoder(feats), expected)
    with pytest.raises(ValueError, match=r"variant must be one of \['16s', '32s', '8s'\], got '4s'"):
        FCNDecoder(info, 3, 32, variant="4s")


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_unet_uses_every_tap_and_skips_upsampling_at_repeated_reductions(output_stride):
    encoder = TinyEncoder(output_stride)
    decoder = UNetDecoder(encoder.feature_info, 3, output_stride, decoder_channels=(20, 18, 16, 14))
    assert len(decoder.stages) == 4
    skips = [f.channels for f in encoder.feature_info[-2::-1]]
    in_chs = [encoder.feature_info[-1].channels, 20, 18, 16]
    assert [s[0].conv.in_channels for s in decoder.stages] == [a + b for a, b in zip(in_chs, skips, strict=True)]
    assert [s[1].conv.out_channels for s in decoder.stages] == [20, 18, 16, 14]
    upsampled = []
    original = torch.nn.functional.interpolate

    def spy(x, *args, **kwargs):
        upsampled.append(tuple(x.shape[-2:]))
        return original(x, *args, **kwargs)

    feats = encoder(torch.randn(1, 3, 64, 64))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.nn.functional, "interpolate", spy)
        assert decoder(feats).shape == (1, 3, 32, 32)
    distinct = sorted(set(encoder.reductions()))
    assert len(upsampled) == len(distinct) - 1  # one upsampling per change of reduction


def test_unet_default_and_bad_channels():
    info = TinyEncoder(32).feature_info
    assert [s[1].conv.out_channels for s in UNetDecoder(info, 3, 32).stages] == [256, 128, 64, 32]
    with pytest.raises(ValueError, match=r"decoder_channels needs 4 entries \(one per tap but the deepest\)"):
        UNetDecoder(info, 3, 32, decoder_channels=(64, 32))


def test_aux_head_reads_the_tap_before_the_deepest():
    for os in (8, 16, 32):
        info = TinyEncoder(os).feature_info
        assert aux_tap_index(info) == 3
    head = FCNHead(64, 7)
    assert head.conv.conv.out_channels == 16 and head(torch.randn(2, 64, 5, 6)).shape == (2, 7, 5, 6)


@pytest.mark.parametrize("name", sorted(LOGIT_REDUCTION))
def test_init_kaiming_and_bn(name):
    torch.manual_seed(0)
    decoder = DECODERS.get(name)(TinyEncoder(16, channels=(64, 64, 128, 128, 256)).feature_info, 3, 16)
    convs = [m for m in decoder.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in decoder.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(m.bias is None or torch.all(m.bias == 0) for m in convs)
    with torch.no_grad():  # PyTorch's own norm defaults are already 1 and 0: perturb them so init_weights must act
        for m in norms:
            m.weight.uniform_(2, 3)
            m.bias.uniform_(2, 3)
    init_weights(decoder)
    assert norms and all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in norms)
    assert all(m.bias is None or torch.all(m.bias == 0) for m in convs)
    big = max(convs, key=lambda m: m.weight.numel())
    fan_out = big.out_channels * big.kernel_size[0] * big.kernel_size[1] // big.groups
    assert big.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.1)


@pytest.mark.parametrize("name", sorted(LOGIT_REDUCTION))
def test_bad_num_classes(name):
    with pytest.raises(ValueError, match="num_classes must be a positive int, got 0"):
        DECODERS.get(name)(TinyEncoder(16).feature_info, 0, 16)
