"""Inception v3 and GoogLeNet: equality with timm/torchvision, stem padding, dilation, weights, smp.

The shape, gradient, output-stride and smp suites of ``test_encoders.py`` run over these encoders too.
"""

from __future__ import annotations

import urllib.error

import pytest
import segmentation_models_pytorch as smp
import timm
import torch
import torchvision
from helpers import max_rel_diff, randomise
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from zoo.encoders import build_encoder
from zoo.encoders.inception import INCEPTION_V3, convert_googlenet, convert_inception_v3, published_names
from zoo.flops import count_params

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"width": 0.125}
# torchvision's feature nodes that the zoo taps (timm's features_only taps for inception_v3)
TV_NODES = {
    "inception_v3": ["Conv2d_2b_3x3", "Conv2d_4a_3x3", "Mixed_5d", "Mixed_6e", "Mixed_7c"],
    "googlenet": ["conv1", "conv3", "inception3b", "inception4e", "inception5b"],
}


def torchvision_model(name: str) -> nn.Module:
    """torchvision's network without auxiliary heads, taking inputs normalised as its weights expect."""
    kwargs = {"aux_logits": False, "init_weights": False, "transform_input": False}
    return getattr(torchvision.models, name)(**kwargs)


@pytest.fixture(scope="module")
def published_files(tmp_path_factory):
    """Random state dicts (BN statistics included) in timm's or torchvision's layout, auxiliary heads included."""
    folder = tmp_path_factory.mktemp("published")
    with torch.device("meta"):
        layouts = {
            "timm-inception_v3": timm.create_model("inception_v3").state_dict(),
            "tv-inception_v3": torchvision.models.inception_v3(aux_logits=True, init_weights=False).state_dict(),
            "tv-googlenet": torchvision.models.googlenet(aux_logits=True, init_weights=False).state_dict(),
        }
    paths = {}
    for key, shapes in layouts.items():
        paths[key] = folder / f"{key}.pth"
        torch.save(randomise(shapes), paths[key])
    return paths


def reference_features(source: str, name: str, state: dict[str, torch.Tensor]) -> nn.Module:
    if source == "timm":
        model = timm.create_model(name, features_only=True)
    else:
        model = create_feature_extractor(torchvision_model(name), TV_NODES[name])
    own = model.state_dict()
    model.load_state_dict({k: state[k] for k in own})
    return model.eval()


@pytest.mark.slow
@pytest.mark.parametrize("source, name", [("timm", "inception_v3"), ("tv", "inception_v3"), ("tv", "googlenet")])
def test_valid_padding_equal_to_the_published_network(source, name, published_files):
    path = published_files[f"{source}-{name}"]
    enc = build_encoder(name, weights=path, stem_padding="valid").eval()
    ref = reference_features(source, name, torch.load(path, weights_only=True))
    x = torch.randn(1, 3, 97, 131, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = enc(x), ref(x)
        theirs = list(theirs.values()) if isinstance(theirs, dict) else theirs
    assert [f.shape[1] for f in theirs] == [f.channels for f in enc.feature_info]
    assert [f.reduction for f in enc.feature_info] == [2, 4, 8, 16, 32]
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape and max_rel_diff(a, b) <= 1e-4
    # the published networks' unpadded convs and poolings: features smaller than ceil(size / reduction)
    assert ours[-1].shape[-2:] == {"inception_v3": (1, 2), "googlenet": (3, 4)}[name]


@pytest.mark.parametrize("name", ["inception_v3", "googlenet"])
def test_same_and_valid_share_weights(name):
    torch.manual_seed(0)
    same = build_encoder(name, **TINY).eval()
    valid = build_encoder(name, stem_padding="valid", **TINY).eval()
    valid.load_state_dict(same.state_dict())  # same keys and shapes
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        a, b = same(x), valid(x)
    assert [f.shape[-1] for f in a] == [48, 24, 12, 6, 3]
    assert a[-1].shape != b[-1].shape or not torch.allclose(a[-1], b[-1])  # padding moves the pooling windows


@pytest.mark.parametrize("name", ["inception_v3", "googlenet"])
@pytest.mark.parametrize("output_stride", [8, 16])
def test_dilated_taps_before_the_first_dropped_stride_are_unchanged(name, output_stride):
    torch.manual_seed(0)
    os32 = build_encoder(name, **TINY).eval()
    enc = build_encoder(name, output_stride=output_stride, **TINY).eval()
    enc.load_state_dict(os32.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours, ref = enc(x), os32(x)
    undilated = {16: 4, 8: 3}[output_stride]
    for a, b in zip(ours[:undilated], ref[:undilated], strict=True):
        assert torch.equal(a, b)
    assert ours[-1].shape[-2:] == (64 // output_stride,) * 2
    convs = [m for m in enc.modules() if isinstance(m, nn.Conv2d)]
    assert max(c.dilation[0] for c in convs) == 32 // output_stride  # the deepest stage's convs
    assert all(c.stride == (1, 1) for c in convs if c.dilation != (1, 1))


def test_inception_v3_factorised_convs_dilate_along_their_long_side():
    enc = build_encoder("inception_v3", output_stride=8, **TINY)
    branch = enc.stages[11].branches[1]  # Mixed_6b's 1x1 -> 1x7 -> 7x1
    assert branch[1].conv.kernel_size == (1, 7) and branch[1].conv.dilation == (2, 2)
    assert branch[1].conv.padding == (0, 6) and branch[2].conv.padding == (6, 0)


def test_full_size_parameter_counts_equal_the_published_ones():
    with torch.device("meta"):
        refs = {"inception_v3": timm.create_model("inception_v3"), "googlenet": torchvision_model("googlenet")}
        for name, ref in refs.items():
            expected = count_params(ref) - count_params(ref.fc)
            counts = {os: count_params(build_encoder(name, output_stride=os)) for os in (8, 16, 32)}
            assert counts == dict.fromkeys((8, 16, 32), expected)
    assert expected == 5_599_904  # GoogLeNet without its classifier (torchvision: 6.62M with it and the aux heads)


@pytest.mark.parametrize(
    "name, channels",
    [("inception_v3", [64, 192, 288, 768, 2048]), ("googlenet", [64, 192, 480, 832, 1024])],
)
def test_taps_are_the_published_ones(name, channels):
    with torch.device("meta"):
        enc = build_encoder(name)
    assert [f.channels for f in enc.feature_info] == channels
    assert enc.mean == enc.std == (0.5, 0.5, 0.5)  # the ports' weights take inputs in -1..1


@pytest.mark.parametrize("source, name", [("timm", "inception_v3"), ("tv", "inception_v3"), ("tv", "googlenet")])
def test_converters_map_every_key(source, name, published_files):
    state = torch.load(published_files[f"{source}-{name}"], weights_only=True)
    converted = {"inception_v3": convert_inception_v3, "googlenet": convert_googlenet}[name](state)
    with torch.device("meta"):
        assert set(converted) == set(build_encoder(name).state_dict())
    dropped = [k for k in state if k.startswith(("fc.", "AuxLogits.", "aux1.", "aux2."))]
    assert dropped and len(converted) == len(state) - len(dropped)


def test_published_names_come_from_the_spec_table():
    names = published_names(INCEPTION_V3)
    assert names["Conv2d_1a_3x3"] == "stages.0"
    assert names["Mixed_5b.branch_pool"] == "stages.7.branches.3.1"  # after its average pooling
    assert names["Mixed_7c.branch3x3dbl_3b"] == "stages.17.branches.2.2.1"  # second of the parallel pair


def test_weights_of_the_other_network_name_expected_and_found(published_files):
    with pytest.raises(ValueError, match=r"tv-googlenet.pth \(inception_v3\) do not fit InceptionEncoder: \d+ missing"):
        build_encoder("inception_v3", weights=published_files["tv-googlenet"])


def test_googlenet_imagenet_offline_names_the_file_alternative(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(ConnectionError, match=r'weights="/path/to/googlenet.pth"'):
        build_encoder("googlenet", weights="imagenet")


@pytest.mark.parametrize("kwargs, message", [
    ({"stem_padding": "full"}, "stem_padding must be 'same' or 'valid', got 'full'"),
    ({"width": -1}, "width must be positive, got -1"),
])  # fmt: skip
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_encoder("googlenet", **kwargs)


@pytest.mark.parametrize("name", ["inception_v3", "googlenet"])
def test_smp_deeplabv3plus_with_a_zoo_inception_at_output_stride_8(name):
    model = smp.DeepLabV3Plus(encoder_name=f"zoo-{name}", encoder_weights=None, encoder_output_stride=8, classes=2)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 2, 64, 64)
