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


def _units(enc: nn.Module, x: torch.Tensor, count: int) -> torch.Tensor:
    x = enc.stem(x)
    for block in enc.blocks[:count]:
        x = block(x)[0]
    return x


@pytest.mark.parametrize("name, units", [("mobilenetv3_small", 8), ("mobilenetv3_large", 12)])
def test_mobilenetv3_equals_torchvision_up_to_deeplabs_halved_last_stage(name, units):
    # torchvision builds TF-slim's V3 tables (hard-swish, squeeze-excite to a quarter, rounded to 8, after the
    # depthwise conv); TF DeepLab's segmentation variants differ from the last stride-2 unit on (halved channels)
    torch.manual_seed(0)
    build = getattr(torchvision.models, name.replace("mobilenetv3", "mobilenet_v3"))
    reference = build().features[: units + 1].eval()
    ours = build_encoder(name).eval()
    ours_state = {k: v for k, v in ours.state_dict().items() if k.startswith("stem.") or _unit(k) < units}
    assert [v.shape for v in ours_state.values()] == [v.shape for v in reference.state_dict().values()]
    for m in reference.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
            m.running_mean.uniform_(-0.1, 0.1)
    ours.load_state_dict(dict(zip(ours_state, reference.state_dict().values(), strict=True)), strict=False)
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        expected = reference(x)
        # TF-slim's gate is relu6(x + 3) * 0.16667, torchvision's / 6: 2e-5 apart
        torch.testing.assert_close(_units(ours, x, units), expected, atol=1e-4, rtol=1e-3)


def _unit(key: str) -> int:
    return int(key.split(".")[1]) if key.startswith("blocks.") else 10**6


@pytest.mark.parametrize(
    "name, inner, deepest, expansions",
    [
        # TF DeepLab's decoder end points: layer_4, layer_7, layer_13 (large); layer_2, layer_4, layer_9 (small)
        ("mobilenetv3_large", [16, 72, 120, 672], 480, [336, 480, 480]),
        ("mobilenetv3_small", [16, 16, 88, 144], 288, [144, 288, 288]),
    ],
)
def test_deeplab_segmentation_variants_halve_the_last_stage_and_tap_depthwise_outputs(name, inner, deepest, expansions):
    enc = build_encoder(name, tap="depthwise", padding="tf-same")
    assert [f.channels for f in enc.feature_info] == [*inner, deepest]
    assert [f.reduction for f in enc.feature_info] == [2, 4, 8, 16, 32]
    assert [b.expand.conv.out_channels for b in enc.blocks[-3:]] == expansions
    assert enc.last.conv.out_channels == deepest and isinstance(enc.last.act, nn.Hardswish)
    x = torch.rand(1, 3, 65, 63)
    with torch.no_grad():
        features = enc.eval()(x)
    assert [tuple(f.shape[1:]) for f in features] == [
        (c, -(-65 // r), -(-63 // r)) for c, r in zip([*inner, deepest], [2, 4, 8, 16, 32], strict=True)
    ]


def test_mobilenet_edgetpu_has_fused_units_relu_and_one_unit_without_residual():
    enc = build_encoder("mobilenet_edgetpu", output_stride=16)
    assert enc.stem.conv.out_channels == 32 and isinstance(enc.stem.act, nn.ReLU)
    assert len(enc.blocks) == 22 and enc.last.conv.out_channels == 1280
    fused = [i for i, b in enumerate(enc.blocks) if b.depthwise is None]
    assert fused == list(range(9))
    assert enc.blocks[0].expand is None and enc.blocks[1].expand.conv.kernel_size == (3, 3)
    assert enc.blocks[1].expand.conv.stride == (2, 2) and enc.blocks[1].expand.conv.out_channels == 128
    assert [b.residual for b in enc.blocks].count(True) == 15  # 3 + 3 + (3 + 3) + 3: one 96-channel unit has none
    assert not enc.blocks[13].residual and enc.blocks[13].project.conv.out_channels == 96
    assert [b.depthwise.conv.dilation[0] for b in enc.blocks[9:]] == [1] * 8 + [1, 2, 2, 2, 2]
    assert [f.channels for f in enc.feature_info] == [16, 32, 48, 96, 1280]


@pytest.mark.parametrize("name", ["mobilenetv3_large", "mobilenetv3_small", "mobilenet_edgetpu"])
def test_v3_strides_become_dilation_at_every_output_stride(name):
    x = torch.rand(1, 3, 64, 64)
    for output_stride in (8, 16, 32):
        enc = build_encoder(name, output_stride=output_stride, width=0.25).eval()
        with torch.no_grad():
            assert enc(x)[-1].shape[-1] == 64 // output_stride
    with pytest.raises(ValueError, match="tap must be 'output' or 'depthwise', got 'raw'"):
        build_encoder(name, tap="raw")


def test_lraspp_head_as_deeplabs_mobilenetv3_cityscapes_config_builds_it():
    model = build_model(
        "mobilenetv3_small",
        "lraspp",
        num_classes=19,
        output_stride=32,
        semantics="deeplab-tf",
        encoder_kwargs={"width": 0.25},
        pool_size=(5, 5),
        pool_stride=(4, 5),
    ).eval()
    head = model.decoder
    assert head.align_corners and head.low_index == 2 and head.deep_index == 4
    assert head.low_classifier.in_channels == model.encoder.feature_info[2].channels  # layer_4/depthwise_output
    x = torch.rand(1, 3, 257, 257)
    with torch.no_grad():
        features = model.encoder(x)
        assert features[-1].shape[-1] == 9 and head(features).shape[-2:] == (33, 33)
        assert model(x).shape == (1, 19, 257, 257)
        small = head([f[..., :3, :3] for f in features])  # a feature under the window pools over all of it
    assert small.shape[-2:] == (3, 3)
    with pytest.raises(ValueError, match="gate must be 'hard_sigmoid' or 'sigmoid', got 'relu'"):
        build_model("mobilenetv3_small", "lraspp", num_classes=2, gate="relu")
    with pytest.raises(ValueError, match=r"no feature at reduction 3; its reductions are \[2, 4, 8, 16, 16\]"):
        build_model("mobilenetv3_small", "lraspp", num_classes=2, low_reduction=3)


@pytest.mark.slow
def test_lraspp_head_equals_tf_deeplabs_ops():
    tf = pytest.importorskip("tensorflow")
    torch.manual_seed(0)
    from zoo.decoders.lraspp import LRASPPDecoder
    from zoo.encoders.base import FeatureInfo

    info = [FeatureInfo(8, 2), FeatureInfo(8, 4), FeatureInfo(12, 8), FeatureInfo(16, 16), FeatureInfo(24, 32)]
    head = LRASPPDecoder(info, 5, 32, channels=16, pool_size=(5, 5), pool_stride=(4, 5), align_corners=True)
    for m in head.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0), m.bias.data.uniform_(-0.5, 0.5)
    head.eval()
    low, deep = torch.randn(1, 12, 33, 33), torch.randn(1, 24, 9, 9)
    with torch.no_grad():
        ours = head([low, low, low, deep, deep]).permute(0, 2, 3, 1).numpy()

    def conv(x, module):  # 1x1 conv, NHWC
        w = module.weight.detach().permute(2, 3, 1, 0).numpy()
        y = tf.nn.conv2d(x, w, 1, "SAME")
        return y + module.bias.detach().numpy() if module.bias is not None else y

    nhwc = lambda t: tf.constant(t.permute(0, 2, 3, 1).numpy())  # noqa: E731
    bn = head.conv[1]
    aspp0 = tf.nn.relu(
        tf.nn.batch_normalization(
            conv(nhwc(deep), head.conv[0]), bn.running_mean.numpy(), bn.running_var.numpy(),
            bn.bias.detach().numpy(), bn.weight.detach().numpy(), 1e-5,
        )
    )  # fmt: skip
    pooled = tf.nn.avg_pool2d(nhwc(deep), (5, 5), (4, 5), "VALID")
    gate = tf.nn.relu6(conv(pooled, head.pool_conv) + 3) * 0.16667
    gate = tf.compat.v1.image.resize_bilinear(gate, (9, 9), align_corners=True)
    merged = tf.compat.v1.image.resize_bilinear(aspp0 * gate, (33, 33), align_corners=True)
    expected = (conv(merged, head.classifier) + conv(nhwc(low), head.low_classifier)).numpy()
    assert abs(ours - expected).max() <= 1e-5 * abs(expected).max()


@pytest.mark.slow
@pytest.mark.parametrize("size", [16, 17])
def test_v3_unit_with_hard_swish_squeeze_excite_and_5x5_stride_2_equals_tf_ops(size):
    tf = pytest.importorskip("tensorflow")
    torch.manual_seed(0)
    unit = build_encoder("mobilenetv3_small", padding="tf-same").blocks[3]  # 24 -> 96 -> 40, 5x5, stride 2
    for m in unit.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0), m.bias.data.uniform_(-0.5, 0.5)
    unit.eval()
    x = torch.randn(1, 24, size, size + 1)
    with torch.no_grad():
        ours = unit(x)[0].permute(0, 2, 3, 1).numpy()

    def bn(y, seq):
        b = seq.bn
        return tf.nn.batch_normalization(
            y, b.running_mean.numpy(), b.running_var.numpy(), b.bias.detach().numpy(), b.weight.detach().numpy(), 1e-3
        )

    hswish = lambda y: y * tf.nn.relu6(y + 3.0) * (1.0 / 6.0)  # noqa: E731 - TF-slim's hard_swish
    hwio = lambda conv: conv.weight.detach().permute(2, 3, 1, 0).numpy()  # noqa: E731
    y = tf.constant(x.permute(0, 2, 3, 1).numpy())
    y = hswish(bn(tf.nn.conv2d(y, hwio(unit.expand.conv), 1, "SAME"), unit.expand))
    dw = unit.depthwise.conv.weight.detach().permute(2, 3, 0, 1).numpy()  # C, 1, k, k -> k, k, C, 1
    y = hswish(bn(tf.nn.depthwise_conv2d(y, dw, (1, 2, 2, 1), "SAME"), unit.depthwise))
    s = tf.reduce_mean(y, axis=(1, 2), keepdims=True)
    s = tf.nn.relu(tf.nn.conv2d(s, hwio(unit.se.reduce), 1, "VALID") + unit.se.reduce.bias.detach().numpy())
    s = tf.nn.conv2d(s, hwio(unit.se.expand), 1, "VALID") + unit.se.expand.bias.detach().numpy()
    y = y * (tf.nn.relu6(s + 3.0) * 0.16667)  # TF-slim MobileNetV3's gate
    expected = bn(tf.nn.conv2d(y, hwio(unit.project.conv), 1, "SAME"), unit.project).numpy()
    assert ours.shape == expected.shape
    assert abs(ours - expected).max() <= 1e-5 * abs(expected).max()


@pytest.mark.parametrize("output_stride, residual", [(32, False), (16, True), (8, True)])
def test_strided_unit_turned_into_dilation_adds_its_input_as_tf_slim_does(output_stride, residual):
    # MobileNetV3-small's unit 8 keeps 48 channels (DeepLab's halved last stage) and strides at output stride 32;
    # TF-slim's expanded_conv adds its input whenever the stride it applies is 1, so below output stride 32 it does
    # (without it, Google's graph and the zoo's backbone output differ by 80% of its largest value at output stride 16)
    enc = build_encoder("mobilenetv3_small", output_stride=output_stride).eval()
    unit = enc.blocks[8]
    assert (unit.expand.conv.in_channels, unit.project.conv.out_channels) == (48, 48)
    assert unit.residual is residual
    nn.init.zeros_(unit.project.bn.weight)  # the projection then outputs zeros: what is left is the residual
    nn.init.zeros_(unit.project.bn.bias)
    x = torch.randn(1, 48, 6, 6)
    with torch.no_grad():
        y, _ = unit(x)
    torch.testing.assert_close(y, x if residual else torch.zeros(1, 48, 3, 3))
    assert [i for i, b in enumerate(enc.blocks) if b.residual] == [2, 4, 5, 7, *([8] if residual else []), 9, 10]
