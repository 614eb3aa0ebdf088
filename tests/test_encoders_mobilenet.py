"""MobileNetV2 as TF DeepLab builds it: torchvision's network at depth multiplier 1, Google's graphs' channels and
dilations, TF's SAME padding under ``semantics="deeplab-tf"``."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from zoo.encoders import build_encoder
from zoo.encoders.mobilenet import TFSamePad
from zoo.encoders.mobilenet_specs import make_divisible
from zoo.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_equals_torchvision_mobilenet_v2_features_at_width_1():
    torch.manual_seed(0)
    reference = torchvision.models.mobilenet_v2().features[:-1].eval()  # without the last 1x1 conv to 1280
    ours = build_encoder("mobilenetv2").eval()
    theirs = list(reference.state_dict().values())
    assert [v.shape for v in ours.state_dict().values()] == [v.shape for v in theirs]
    for m in reference.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 1e-3  # TF-slim's epsilon, which the zoo's MobileNet uses
            m.running_var.uniform_(0.5, 2.0)
    ours.load_state_dict(dict(zip(ours.state_dict(), reference.state_dict().values(), strict=True)))
    x = torch.randn(1, 3, 96, 80)
    with torch.no_grad():
        expected = reference(x)
        assert torch.allclose(ours(x)[-1], expected, atol=1e-5, rtol=1e-4)
    assert [f.channels for f in ours.feature_info] == [16, 24, 32, 96, 320]


def test_depth_multiplier_half_has_the_channels_of_googles_graph():
    enc = build_encoder("mobilenetv2", width=0.5)
    assert enc.stem.conv.out_channels == 16 and enc.blocks[0].expand is None
    projects = [b.project.conv.out_channels for b in enc.blocks]
    assert projects == [8, 12, 12, 16, 16, 16, 32, 32, 32, 32, 48, 48, 48, 80, 80, 80, 160]
    assert [b.expand.conv.out_channels for b in enc.blocks[1:4]] == [48, 72, 72]
    assert make_divisible(0.35 * 24, 8) == 8 and make_divisible(0.75 * 24, 8) == 24  # never under 90% of it


@pytest.mark.parametrize(
    "output_stride, dilations",
    # TF-slim: the unit whose stride is dropped keeps the rate, the later ones multiply it (Google's graphs:
    # deeplabv3_257_mv_gpu.tflite at 8, deeplabv3_mnv2_dm05_pascal_quant.tflite at 16)
    [(8, [1] * 7 + [2] * 7 + [4] * 3), (16, [1] * 14 + [2] * 3), (32, [1] * 17)],
)
def test_stride_becomes_dilation_as_in_tf_slim(output_stride, dilations):
    enc = build_encoder("mobilenetv2", output_stride=output_stride, width=0.25)
    assert [b.depthwise.conv.dilation[0] for b in enc.blocks] == dilations
    strided = [i for i, b in enumerate(enc.blocks) if b.depthwise.conv.stride[0] == 2]
    assert strided == [1, 3, 6, 13][: {8: 2, 16: 3, 32: 4}[output_stride]]
    assert [b.residual for b in enc.blocks].count(True) == 10


def test_deeplab_tf_semantics_pad_strided_convs_as_tf_same():
    tf_model = build_model("mobilenetv2", "deeplabv3", 3, 16, semantics="deeplab-tf", encoder_kwargs={"width": 0.25})
    zoo_model = build_model("mobilenetv2", "deeplabv3", 3, 16, encoder_kwargs={"width": 0.25})
    assert isinstance(tf_model.encoder.stem.pad, TFSamePad) and tf_model.encoder.stem.conv.padding == (0, 0)
    assert not hasattr(zoo_model.encoder.stem, "pad") and zoo_model.encoder.stem.conv.padding == (1, 1)
    assert not hasattr(tf_model.encoder.blocks[2].depthwise, "pad")  # stride 1: symmetric in both conventions
    with pytest.raises(ValueError, match="padding must be 'symmetric' or 'tf-same', got 'valid'"):
        build_encoder("mobilenetv2", padding="valid")


@pytest.mark.parametrize("size, pads", [(8, (0, 1)), (9, (1, 1)), (257, (1, 1)), (2, (0, 1))])
def test_tf_same_pad_amounts(size, pads):
    pad = TFSamePad(3, 2)
    assert pad._pads(size) == pads
    assert pad(torch.zeros(1, 1, size, size + 1)).shape[-2:] == (size + sum(pads), size + 1 + sum(pad._pads(size + 1)))


@pytest.mark.slow
def test_tf_same_pad_equals_tensorflow_on_even_and_odd_sizes():
    tf = pytest.importorskip("tensorflow")
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, 2, bias=False)
    for h, w in [(16, 16), (17, 16), (15, 18)]:
        x = torch.randn(1, 3, h, w)
        expected = tf.nn.conv2d(
            x.permute(0, 2, 3, 1).numpy(), conv.weight.permute(2, 3, 1, 0).detach().numpy(), 2, "SAME"
        )
        with torch.no_grad():
            ours = conv(TFSamePad(3, 2)(x)).permute(0, 2, 3, 1).numpy()
        assert ours.shape == expected.shape and abs(ours - expected.numpy()).max() < 1e-5


def test_truncate_keeps_the_first_taps():
    enc = build_encoder("mobilenetv2", width=0.25)
    enc.truncate(3)
    assert len(enc.blocks) == 6 and [f.reduction for f in enc.feature_info] == [2, 4, 8]
    assert [f.shape[-1] for f in enc(torch.randn(1, 3, 64, 64))] == [32, 16, 8]
