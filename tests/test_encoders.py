"""Encoders: shapes by reduction, gradients, output strides, ablations, weights, timm equality, smp interop."""

from __future__ import annotations

import functools
import re

import pytest
import segmentation_models_pytorch as smp
import timm
import torch
from helpers import max_rel_diff, randomise
from torch import nn

import zoo
from zoo.encoders import ENCODERS, build_encoder, list_encoders
from zoo.encoders.external import ExternalEncoder
from zoo.encoders.xception_aligned import SeparableConv, XceptionBlock, convert_timm_aligned
from zoo.encoders.xception_legacy import convert_timm_legacy
from zoo.flops import count_macs, count_params

ZOO_NAMES = [
    "googlenet",
    "inception_v3",
    "mobilenet_edgetpu",
    "mobilenetv2",
    "mobilenetv3_large",
    "mobilenetv3_small",
    "xception",
    "xception41",
    "xception65",
    "xception71",
]
XCEPTIONS = ["xception", "xception41", "xception65", "xception71"]
STRIDES = [8, 16, 32]
TINY = {"width": 0.125}
# timm's parameter counts without classifier (features_only at output stride 32)
TIMM_PARAMS = {"xception41": 24_920_560, "xception65": 37_867_312, "xception71": 40_289_736}


@functools.cache
def tiny(name: str, output_stride: int) -> nn.Module:
    torch.manual_seed(0)
    return build_encoder(name, output_stride=output_stride, **TINY)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def timm_state(name: str) -> dict[str, torch.Tensor]:
    """Random values in the layout of ``timm.create_model(name).state_dict()``."""
    with torch.device("meta"):
        shapes = timm.create_model(name).state_dict()
    return randomise(shapes)


# ---------------------------------------------------------------- registry and names


def test_zoo_names_are_registered():
    assert list_encoders() == ZOO_NAMES
    assert zoo.list_encoders() == ZOO_NAMES


def test_unknown_name_lists_zoo_names_and_mentions_smp_and_timm():
    with pytest.raises(KeyError) as err:
        build_encoder("xception66")
    msg = str(err.value)
    assert "unknown encoder 'xception66'" in msg
    assert ", ".join(ZOO_NAMES) in msg
    assert "smp encoder names" in msg and "tu-<timm model>" in msg


@pytest.mark.parametrize("name", ["xception65", "xception", "inception_v3", "googlenet", "resnet18"])
@pytest.mark.parametrize("output_stride", [4, 64])
def test_bad_output_stride(name, output_stride):
    with pytest.raises(ValueError, match=rf"output_stride must be one of \{{8, 16, 32\}}, got {output_stride}"):
        build_encoder(name, output_stride=output_stride)


# ---------------------------------------------------------------- shapes, gradients, parameters


@pytest.mark.parametrize("output_stride", STRIDES)
@pytest.mark.parametrize("name", ZOO_NAMES)
def test_features_match_feature_info(name, output_stride):
    enc = tiny(name, output_stride).eval()
    info = enc.feature_info
    reductions = [f.reduction for f in info]
    assert reductions == sorted(reductions) and reductions[0] == 2 and reductions[-1] == output_stride
    assert info[enc.index_of(4)] == type(info[0])(info[enc.index_of(4)].channels, 4)  # the stride-4 tap exists
    assert enc.output_stride == output_stride and enc.mean == (0.5,) * 3 and enc.std == (0.5,) * 3
    for h, w in [(65, 65), (97, 131)]:
        with torch.no_grad():
            feats = enc(torch.randn(1, 3, h, w))
        assert len(feats) == len(info)
        for f, fi in zip(feats, info, strict=True):
            assert tuple(f.shape) == (1, fi.channels, ceil_div(h, fi.reduction), ceil_div(w, fi.reduction))


@pytest.mark.parametrize("output_stride", STRIDES)
@pytest.mark.parametrize("name", ZOO_NAMES)
def test_gradients_reach_the_stem(name, output_stride):
    enc = tiny(name, output_stride).train()
    enc.zero_grad()
    sum(f.mean() for f in enc(torch.randn(2, 3, 33, 33))).backward()
    first = next(enc.parameters())  # the first conv's weight
    assert first.dim() == 4 and first.shape[1] == 3 and first.grad is not None and first.grad.abs().sum() > 0
    assert all(p.grad is not None for p in enc.parameters())


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_parameters_do_not_depend_on_output_stride(name):
    counts = {os: count_params(tiny(name, os)) for os in STRIDES}
    assert len(set(counts.values())) == 1, counts
    keys = {os: [(k, v.shape) for k, v in tiny(name, os).state_dict().items()] for os in STRIDES}
    assert keys[8] == keys[16] == keys[32]


def test_deepest_taps_are_dilated():
    enc = tiny("xception65", 8)
    dilations = [b.convs[0][0].dilation[0] for b in enc.blocks]
    # entry blocks at 1, the entry block whose stride is dropped keeps 1, middle flow 2, exit flow 4
    assert dilations[:3] == [1, 1, 1] and set(dilations[3:19]) == {2} and dilations[19:] == [2, 4]
    assert enc.blocks[2].convs[2].conv_dw.stride == (1, 1) and enc.blocks[2].shortcut.conv.stride == (1, 1)
    legacy = tiny("xception", 8)
    assert legacy.blocks[2].pool.stride == 1 and legacy.blocks[3].convs[0].conv_dw.dilation == (2, 2)
    assert legacy.tail.sep1.conv_dw.dilation == (4, 4)


def test_full_size_parameter_counts():
    with torch.device("meta"):  # counting needs no values
        for name, expected in TIMM_PARAMS.items():
            counts = {os: count_params(build_encoder(name, output_stride=os)) for os in STRIDES}
            assert counts == {8: expected, 16: expected, 32: expected}
            # DeepLab's taps; at reduction 4 the 256-channel activation before entry block 2's strided conv
            assert [f.channels for f in build_encoder(name).feature_info] == [128, 256, 728, 1024, 2048]
        # Chollet's Xception: 22.86M with its 2048 -> 1000 classifier (2048 * 1000 weights + 1000 biases)
        legacy = {os: count_params(build_encoder("xception", output_stride=os)) + 2049 * 1000 for os in STRIDES}
        assert set(legacy.values()) == {count_params(timm.create_model("legacy_xception"))} == {22_855_952}


def test_xception71_keeps_its_shortcut_at_output_stride_8():
    # timm builds the 728 -> 728 entry block without its 1x1 shortcut once its stride becomes 1 (39.76M
    # parameters instead of 40.29M, pretrained shortcut discarded); the zoo keeps it with stride 1.
    with torch.device("meta"):
        timm_os8 = count_params(timm.create_model("xception71", features_only=True, output_stride=8))
        zoo_os8 = build_encoder("xception71", output_stride=8)
    assert timm_os8 == 39_758_296 < count_params(zoo_os8) == TIMM_PARAMS["xception71"]
    assert zoo_os8.blocks[4].shortcut.conv.stride == (1, 1)


def test_count_macs_on_an_encoder():
    enc = tiny("xception41", 16)
    macs = count_macs(enc, torch.randn(1, 3, 64, 64))
    assert macs > count_params(enc)  # every weight is used at least once per position


# ---------------------------------------------------------------- ablations


def blocks_of(enc) -> list[XceptionBlock]:
    return list(enc.blocks)


def test_width_rounds_channels_to_multiples_of_8():
    enc = build_encoder("xception65", width=0.125)
    assert [f.channels for f in enc.feature_info] == [16, 32, 88, 128, 256]
    assert all(m.out_channels % 8 == 0 for m in enc.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("act, cls", [("relu", nn.ReLU), ("elu", nn.ELU)])
def test_mid_activation(act, cls):
    default = build_encoder("xception41", **TINY)
    pre_act = [b for b in blocks_of(default) if b.pre_act]
    assert not any(hasattr(sep, "act_mid") for b in pre_act for sep in b.convs)
    assert all(isinstance(sep.act_mid, nn.ReLU) for sep in blocks_of(default)[-1].convs)  # exit unit: published
    enc = build_encoder("xception41", mid_activation=act, **TINY)
    assert all(isinstance(sep.act_mid, cls) for b in blocks_of(enc) for sep in b.convs)
    assert list(enc.blocks[0].convs[0]._modules) == ["conv_dw", "bn_dw", "act_mid", "conv_pw", "bn_pw"]
    assert count_params(enc) == count_params(default)
    x = torch.randn(1, 3, 33, 33)
    enc.load_state_dict(default.state_dict())
    with torch.no_grad():
        assert not torch.allclose(enc.eval()(x)[-1], default.eval()(x)[-1])


def test_order_pointwise_first():
    enc = build_encoder("xception41", order="pointwise_first", **TINY)
    sep = enc.blocks[0].convs[0]  # 16 -> 16 channels... the first unit grows 16 -> 16 at width 0.125
    assert list(sep._modules) == ["conv_pw", "bn_pw", "conv_dw", "bn_dw"]
    sep = enc.blocks[2].convs[0]  # 32 -> 88: the depthwise stage runs on the 88 output channels
    assert sep.conv_pw.in_channels == 32 and sep.conv_dw.in_channels == sep.conv_dw.groups == 88
    default = build_encoder("xception41", **TINY)
    assert default.blocks[2].convs[0].conv_dw.in_channels == 32
    assert count_params(enc) != count_params(default)
    assert [f.reduction for f in enc.feature_info] == [2, 4, 8, 16, 32]
    assert enc(torch.randn(1, 3, 33, 33))[-1].shape == (1, 256, 2, 2)


def test_residual_false_removes_shortcuts_and_the_sum():
    enc = build_encoder("xception41", residual=False, **TINY).eval()
    default = build_encoder("xception41", **TINY)
    assert all(b.shortcut is None and not b.residual for b in blocks_of(enc))
    shortcut_params = sum(count_params(b.shortcut) for b in blocks_of(default) if b.shortcut is not None)
    assert count_params(enc) == count_params(default) - shortcut_params
    block, x = enc.blocks[5], torch.randn(1, 88, 9, 9)  # a middle unit: output = the three convs alone
    with torch.no_grad():
        y = x
        for sep in block.convs:
            y = sep(torch.relu(y))
        assert torch.equal(block(x), y)
        default_block = default.blocks[5].eval()
        default_block.load_state_dict(block.state_dict())
        assert torch.allclose(default_block(x), y + x)


SEGMENTS = [1, 2, 4, 8, "all"]


def spatial_convs(enc) -> list[nn.Conv2d]:
    return [sep.conv_dw for sep in enc.modules() if isinstance(sep, SeparableConv)]


@pytest.mark.parametrize("order", ["depthwise_first", "pointwise_first"])
@pytest.mark.parametrize("segments", SEGMENTS)
def test_segments_split_the_3x3_conv(segments, order):
    enc = build_encoder("xception41", segments=segments, order=order, **TINY)
    for conv in spatial_convs(enc):
        groups = conv.in_channels if segments == "all" else segments
        assert conv.kernel_size == (3, 3) and conv.groups == groups and conv.in_channels == conv.out_channels
        assert conv.weight.shape == (conv.out_channels, conv.in_channels // groups, 3, 3)
    assert all(sep.conv_pw.groups == 1 for sep in enc.modules() if isinstance(sep, SeparableConv))
    assert enc(torch.randn(1, 3, 33, 33))[-1].shape[1] == enc.feature_info[-1].channels


@pytest.mark.parametrize("order", ["depthwise_first", "pointwise_first"])
def test_segments_cost_what_the_spectrum_predicts(order):
    """A 3x3 conv on C channels in s segments has 9 C^2 / s weights and as many MACs per output position."""
    x = torch.randn(1, 3, 40, 40)
    depthwise = build_encoder("xception41", order=order, **TINY)
    sizes = {}

    def record(k: int, output: torch.Tensor) -> None:
        sizes[k] = output.shape[-2:].numel()

    hooks = [c.register_forward_hook(lambda m, i, o, k=k: record(k, o)) for k, c in enumerate(spatial_convs(depthwise))]
    base_macs = count_macs(depthwise, x)
    for h in hooks:
        h.remove()
    chs = [c.in_channels for c in spatial_convs(depthwise)]
    for s in (1, 4, 8):
        enc = build_encoder("xception41", segments=s, order=order, **TINY)
        extra = [9 * c * (c // s - 1) for c in chs]  # weights beyond the depthwise conv's 9 C
        assert count_params(enc) == count_params(depthwise) + sum(extra)
        assert count_macs(enc, x) == base_macs + sum(e * sizes[k] for k, e in enumerate(extra))
    one = build_encoder("xception41", segments=1, order=order, **TINY)
    assert all(c.groups == 1 for c in spatial_convs(one))  # one segment: a regular conv, a one-tower Inception


def test_segments_must_divide_the_3x3_channels():
    with pytest.raises(ValueError, match="segments=3 does not divide the 3x3 conv's 64 channels"):
        build_encoder("xception41", segments=3)
    with pytest.raises(ValueError, match="segments=16 does not divide the 3x3 conv's 728 channels"):
        with torch.device("meta"):
            build_encoder("xception41", segments=16)
    enc = build_encoder("xception41", segments=16, width=0.25)  # a width rounds channels to multiples of 16
    assert all(c.in_channels % 16 == 0 for c in spatial_convs(enc))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mid_activation": "gelu"}, "mid_activation must be None, 'relu' or 'elu', got 'gelu'"),
        ({"order": "sideways"}, "order must be 'depthwise_first' or 'pointwise_first', got 'sideways'"),
        ({"width": 0}, "width must be positive, got 0"),
        ({"segments": 0}, "segments must be 'all' or an int >= 1, got 0"),
        ({"segments": "some"}, "segments must be 'all' or an int >= 1, got 'some'"),
    ],
)
def test_bad_ablation_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_encoder("xception41", **kwargs)


# ---------------------------------------------------------------- weights and timm equality


@pytest.fixture(scope="module")
def timm_files(tmp_path_factory):
    """Random timm state dicts (BN statistics included) of every variant, saved once per module."""
    cache = {}

    def get(name: str, suffix: str = ".pth"):
        if (name, suffix) not in cache:
            state = timm_state(name)
            path = tmp_path_factory.mktemp("timm") / f"{name}{suffix}"
            if suffix == ".safetensors":
                from safetensors.torch import save_file

                save_file(state, str(path))
            else:
                torch.save(state, path)
            cache[name, suffix] = path
        return cache[name, suffix]

    return get


def timm_features(name: str, state: dict[str, torch.Tensor], output_stride: int = 32) -> nn.Module:
    """timm's ``features_only`` model holding ``state`` (built on the meta device, so no init cost)."""
    with torch.device("meta"):
        kwargs = {} if output_stride == 32 else {"output_stride": output_stride}
        model = timm.create_model(name, features_only=True, **kwargs)
    own = model.state_dict()

    def source_key(key: str) -> str:  # features_only renames "stem.0" -> "stem_0" and may nest under "body."
        for cand in (key, key.removeprefix("body."), key.replace("_", ".", 1)):
            if cand in state:
                return cand
        raise KeyError(key)

    model.load_state_dict({k: state[source_key(k)] for k in own}, assign=True)
    return model.eval()


# xception71 at output stride 8: timm drops a 1x1 shortcut the zoo keeps (see the test above), so the two
# networks differ there by construction; it is compared at 16 and 32.
TIMM_CASES = [(n, os) for n in TIMM_PARAMS for os in STRIDES if (n, os) != ("xception71", 8)]


@pytest.mark.slow
@pytest.mark.parametrize("name, output_stride", TIMM_CASES)
def test_equal_to_timm_features(name, output_stride, timm_files):
    path = timm_files(name)
    enc = build_encoder(name, output_stride=output_stride, weights=path).eval()
    ref = timm_features(name, torch.load(path, weights_only=True), output_stride)
    assert [f.reduction for f in enc.feature_info] == ref.feature_info.reduction()
    assert [f.channels for f in enc.feature_info] == ref.feature_info.channels()
    x = torch.randn(1, 3, 48, 48, generator=torch.Generator().manual_seed(1))  # deepest map >= 2x2 at OS32
    with torch.no_grad():
        ours, theirs = enc(x), ref(x)
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape
        assert max_rel_diff(a, b) <= 1e-4


@pytest.mark.parametrize("name", ["xception41", "xception"])
def test_weights_saved_from_a_features_only_model(name, timm_files, tmp_path):
    """A state dict saved from timm's ``features_only=True`` model (its own key names) loads like the full one's."""
    timm_name = {"xception": "legacy_xception"}.get(name, name)
    full = torch.load(timm_files(timm_name), weights_only=True)
    features = timm_features(timm_name, full)
    path = tmp_path / "features_only.pth"
    torch.save(features.state_dict(), path)
    assert not set(features.state_dict()) <= set(full)  # other names than the full model's
    kwargs = {"stem_padding": "valid"} if name == "xception" else {}  # the published network exactly
    enc = build_encoder(name, weights=path, **kwargs).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert max_rel_diff(enc(x)[-1], features.eval()(x)[-1]) <= 1e-4


def test_safetensors_weights(timm_files):
    path = timm_files("xception41", ".safetensors")
    enc = build_encoder("xception41", weights=path)
    expected = convert_timm_aligned(timm_state("xception41"))
    assert all(torch.equal(v, expected[k]) for k, v in enc.state_dict().items())


def test_converter_is_an_explicit_key_mapping():
    with torch.device("meta"):
        state = timm.create_model("xception71").state_dict()
        zoo_keys = set(build_encoder("xception71").state_dict())
    converted = convert_timm_aligned(state)
    assert set(converted) == zoo_keys  # head.fc dropped, every other key mapped
    assert "stem.conv1.weight" in converted and "blocks.4.convs.2.conv_dw.weight" in converted
    assert "blocks.4.shortcut.conv.weight" in converted and "head.fc.weight" not in converted


def test_weights_of_another_variant_name_expected_and_found(timm_files):
    with pytest.raises(ValueError) as err:
        build_encoder("xception65", weights=timm_files("xception41"))
    msg = str(err.value)
    assert "xception41.pth (xception65) do not fit AlignedXception" in msg
    assert re.search(r"\d+ missing keys \[blocks\.13\.", msg)
    assert "blocks.11.convs.2.conv_dw.weight: expected (728, 1, 3, 3), found (1024, 1, 3, 3)" in msg


def test_weights_with_a_wrong_shape(tmp_path, timm_files):
    state = torch.load(timm_files("xception41"), weights_only=True)
    state["stem.0.conv.weight"] = torch.zeros(32, 4, 3, 3)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"stem.conv1.weight: expected \(32, 3, 3, 3\), found \(32, 4, 3, 3\)"):
        build_encoder("xception41", weights=tmp_path / "bad.pth")


def test_missing_and_unreadable_weight_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        build_encoder("xception41", weights=tmp_path / "nowhere.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="list.pth' does not hold a state dict"):
        build_encoder("xception", weights=tmp_path / "list.pth")


def test_imagenet_offline_names_the_file_alternative(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ConnectionError, match=r'weights="/path/to/xception65.pth"'):
        build_encoder("xception65", weights="imagenet")


# ---------------------------------------------------------------- Chollet's Xception


@pytest.fixture(scope="module")
def legacy_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("legacy") / "legacy_xception.pth"
    torch.save(timm_state("legacy_xception"), path)
    return path


@pytest.mark.slow
def test_legacy_with_valid_stem_equal_to_timm(legacy_file):
    enc = build_encoder("xception", weights=legacy_file, stem_padding="valid").eval()
    ref = timm_features("legacy_xception", torch.load(legacy_file, weights_only=True))
    assert [f.channels for f in enc.feature_info] == ref.feature_info.channels()
    assert [f.reduction for f in enc.feature_info] == ref.feature_info.reduction()
    x = torch.randn(1, 3, 97, 131, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = enc(x), ref(x)
    assert ours[-1].shape[-2:] == (3, 4)  # Chollet's unpadded stem: 97x131 -> 48x65 -> 46x63 before the blocks
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape and max_rel_diff(a, b) <= 1e-4


@pytest.mark.parametrize("stem_padding, deepest", [("same", (4, 5)), ("valid", (3, 4))])
def test_legacy_stem_padding(stem_padding, deepest):
    enc = build_encoder("xception", stem_padding=stem_padding, **TINY).eval()
    assert enc.stem.conv1.padding == enc.stem.conv2.padding == ((1, 1) if stem_padding == "same" else (0, 0))
    with torch.no_grad():
        assert enc(torch.randn(1, 3, 97, 131))[-1].shape[-2:] == deepest
    assert count_params(enc) == count_params(tiny("xception", 32))
    with pytest.raises(ValueError, match="stem_padding must be 'same' or 'valid', got 'full'"):
        build_encoder("xception", stem_padding="full")


@pytest.mark.slow
@pytest.mark.parametrize("output_stride, undilated", [(16, 4), (8, 3)])
def test_legacy_dilates(legacy_file, output_stride, undilated):
    os32 = build_encoder("xception", weights=legacy_file).eval()
    enc = build_encoder("xception", output_stride=output_stride, weights=legacy_file).eval()
    assert [f.reduction for f in enc.feature_info][-2:] == [output_stride] * 2
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, ref = enc(x), os32(x)
    # taps before the first dropped stride are the very same computation; deeper ones keep their resolution
    for a, b in zip(ours[:undilated], ref[:undilated], strict=True):
        assert torch.equal(a, b)
    assert ours[-1].shape[-2:] == (64 // output_stride,) * 2
    assert not torch.allclose(ours[-1][..., :2, :2], ref[-1])


def test_legacy_converter_maps_every_key():
    with torch.device("meta"):
        converted = convert_timm_legacy(timm.create_model("legacy_xception").state_dict())
        assert set(converted) == set(build_encoder("xception").state_dict())
    assert converted.keys() >= {"blocks.0.convs.1.conv_pw.weight", "blocks.0.bns.1.weight", "tail.sep2.conv_dw.weight"}


# ---------------------------------------------------------------- smp interop


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_registered_in_smp(name):
    entry = smp.encoders.encoders[f"zoo-{name}"]
    assert entry["pretrained_settings"] == {}  # weights load through the zoo
    # what smp's get_encoder does, plus a width (get_encoder passes no extra arguments to smp's own encoders)
    enc = entry["encoder"](**entry["params"], depth=5, output_stride=16, width=0.125)
    enc.set_in_channels(3, pretrained=False)
    enc.make_dilated(16)
    assert enc.out_channels == [3] + [f.channels for f in tiny(name, 16).feature_info]
    assert enc.output_stride == 16
    feats = enc(torch.randn(1, 3, 64, 64))
    assert [f.shape[-1] for f in feats] == [64, 32, 16, 8, 4, 4]
    assert [f.shape[1] for f in feats] == enc.out_channels
    with pytest.raises(ValueError, match="built at output_stride=16, asked for 8"):
        enc.make_dilated(8)


def test_smp_deeplabv3plus_with_zoo_xception65():
    model = smp.DeepLabV3Plus(encoder_name="zoo-xception65", encoder_weights=None, encoder_output_stride=16).eval()
    assert isinstance(model.encoder.encoder, type(build_encoder("xception65", width=0.125)))
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1, 64, 64)


def test_smp_unet_with_zoo_xception_and_one_input_channel():
    model = smp.Unet(encoder_name="zoo-xception", encoder_weights=None, in_channels=1, classes=2, encoder_depth=4,
                     decoder_channels=(64, 32, 16, 8))  # fmt: skip
    assert model(torch.randn(1, 1, 64, 64)).shape == (1, 2, 64, 64)


# ---------------------------------------------------------------- external encoders


@pytest.mark.parametrize("output_stride", STRIDES)
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "tu-resnet18"])
def test_external_feature_info_matches_outputs(name, output_stride):
    enc = build_encoder(name, output_stride=output_stride).eval()
    assert isinstance(enc, ExternalEncoder) and name not in list_encoders()
    assert [f.reduction for f in enc.feature_info] == [min(r, output_stride) for r in (2, 4, 8, 16, 32)]
    assert enc.mean == (0.485, 0.456, 0.406) and enc.std == (0.229, 0.224, 0.225)
    with torch.no_grad():
        feats = enc(torch.randn(1, 3, 64, 96))
    for f, fi in zip(feats, enc.feature_info, strict=True):
        assert tuple(f.shape) == (1, fi.channels, 64 // fi.reduction, 96 // fi.reduction)


def test_external_timm_inception_v3():
    enc = build_encoder("tu-inception_v3")
    assert [f.channels for f in enc.feature_info] == [64, 192, 288, 768, 2048]
    assert enc.mean == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="'tu-inception_v3' cannot be dilated to output_stride=16"):
        build_encoder("tu-inception_v3", output_stride=16)


def test_external_weights_file(tmp_path):
    torch.manual_seed(0)
    src = build_encoder("resnet18").eval()
    torch.save(src.body.state_dict(), tmp_path / "r18.pth")
    enc = build_encoder("resnet18", weights=tmp_path / "r18.pth").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(enc(x), src(x), strict=True))
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"bad.pth' \(encoder 'resnet18'\) do not fit ResNetEncoder: \d+ missing keys"):
        build_encoder("resnet18", weights=tmp_path / "bad.pth")


def test_registry_names_only_zoo_encoders():
    assert all(not n.startswith(("tu-", "zoo-")) for n in ENCODERS.names())
