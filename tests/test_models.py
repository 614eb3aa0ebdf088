"""Models: every encoder × decoder × output stride maps N×3×H×W to N×C×H×W; backward, aux head, save/load."""

from __future__ import annotations

import argparse
import itertools
import json

import helpers
import pytest
import torch

import zoo
from zoo.checkpoint import load_model, save_model
from zoo.models import SegmentationModel, build_model

TINY = {"width": 0.125}
# the zoo's encoders (width-reduced) and two smp encoders
ENCODERS_UNDER_TEST = {
    "xception41": TINY,
    "xception65": TINY,
    "xception71": TINY,
    "xception": TINY,
    "inception_v3": TINY,
    "googlenet": TINY,
    "mobilenetv2": TINY,
    "mobilenetv3_small": TINY,
    "resnet18": None,
    "mobilenet_v2": None,
}
DECODERS = ["deeplabv3", "deeplabv3plus", "dpc", "fcn", "lraspp", "unet"]
STRIDES = [8, 16, 32]
PAIRS = list(itertools.product(ENCODERS_UNDER_TEST, DECODERS))


pytestmark = pytest.mark.usefixtures("one_thread")


def make(encoder: str, decoder: str, output_stride: int = 16, **kwargs) -> SegmentationModel:
    torch.manual_seed(0)
    kw = ENCODERS_UNDER_TEST.get(encoder)
    return build_model(encoder, decoder, num_classes=3, output_stride=output_stride, encoder_kwargs=kw, **kwargs)


@pytest.fixture
def tiny(monkeypatch):
    """Register the fake ``TinyEncoder`` as ``tiny-test`` for the duration of one test."""
    return helpers.register_tiny_encoder(monkeypatch)


def test_decoders_are_the_registered_ones():
    assert zoo.list_decoders() == DECODERS


@pytest.mark.parametrize("output_stride", STRIDES)
@pytest.mark.parametrize("encoder, decoder", PAIRS)
def test_output_is_input_size_and_eval_deterministic(encoder, decoder, output_stride):
    model = make(encoder, decoder, output_stride).eval()
    assert model.encoder.output_stride == output_stride
    x = torch.randn(1, 3, 65, 97)
    with torch.no_grad():
        first, second = model(x), model(x)
    assert isinstance(first, torch.Tensor) and first.shape == (1, 3, 65, 97)
    assert torch.isfinite(first).all()
    torch.testing.assert_close(first, second, rtol=0, atol=0)


@pytest.mark.parametrize("encoder, decoder", PAIRS)
def test_backward_reaches_the_encoder_stem(encoder, decoder):
    output_stride = STRIDES[PAIRS.index((encoder, decoder)) % 3]
    model = make(encoder, decoder, output_stride).train()
    logits = model(torch.randn(2, 3, 47, 39))
    assert logits.shape == (2, 3, 47, 39)
    torch.nn.functional.cross_entropy(logits, torch.randint(0, 3, (2, 47, 39))).backward()
    stem = next(model.encoder.parameters())
    assert stem.grad is not None and stem.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.decoder.parameters())


@pytest.mark.parametrize("encoder", ENCODERS_UNDER_TEST)
def test_aux_head(encoder):
    model = make(encoder, "deeplabv3plus", 16, aux_head=True).train()
    out = model(torch.randn(2, 3, 41, 57))
    assert set(out) == {"out", "aux"}
    assert out["out"].shape == out["aux"].shape == (2, 3, 41, 57)
    (out["out"].mean() + out["aux"].mean()).backward()
    assert all(p.grad is not None for p in model.aux_head.parameters())
    assert model.aux_index == len(model.encoder.feature_info) - 2
    assert isinstance(model.eval()(torch.randn(1, 3, 41, 57)), torch.Tensor)
    assert make(encoder, "deeplabv3plus", 16).aux_head is None


@pytest.mark.parametrize("size", [(97, 131), (375, 500), (513, 513), (32, 64), (1, 1)])
def test_any_size_with_tiny_encoder(tiny, size):
    model = build_model(tiny, "deeplabv3plus", num_classes=4).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, *size)).shape == (1, 4, *size)


def test_zero_padding_to_the_size_divisor(tiny):
    """The encoder sees the normalised input padded with zeros (the mean colour) at the bottom and right."""
    model = build_model(tiny, "fcn", num_classes=2, mean=(0.2, 0.4, 0.6), std=(0.5, 0.25, 2.0)).eval()
    seen = []
    model.encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    x = torch.rand(1, 3, 40, 70)
    with torch.no_grad():
        model(x)
    assert seen[0].shape == (1, 3, 64, 96)
    mean, std = torch.tensor([0.2, 0.4, 0.6]).view(1, 3, 1, 1), torch.tensor([0.5, 0.25, 2.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(seen[0][..., :40, :70], (x - mean) / std)
    assert seen[0][..., 40:, :].abs().sum() == 0 and seen[0][..., :, 70:].abs().sum() == 0


def test_build_args_are_plain_and_rebuild(tiny):
    model = build_model(tiny, "deeplabv3plus", num_classes=5, output_stride=8, aux_head=True, atrous_rates=(1, 2, 3))
    assert model.build_args == {
        "encoder": "tiny-test",
        "decoder": "deeplabv3plus",
        "num_classes": 5,
        "output_stride": 8,
        "aux_head": True,
        "encoder_kwargs": {},
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "atrous_rates": [1, 2, 3],
    }
    json.dumps(model.build_args)
    again = build_model(**model.build_args)
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert model.num_classes == 5 and model.mean == tuple(model.encoder.mean) and model.std == tuple(model.encoder.std)


@pytest.mark.parametrize("decoder", DECODERS)
def test_save_load_roundtrip(tmp_path, decoder):
    model = make("xception41", decoder, 16, aux_head=True).eval()
    for p in model.parameters():  # move off the init so a rebuilt model would differ
        p.data.add_(0.01 * torch.randn_like(p))
    path = save_model(model, tmp_path / "m" / "model.pt", class_names=["a", "b", "c"], palette=[[0, 0, 0]] * 3)
    loaded = load_model(path)
    assert not loaded.training and loaded.build_args == model.build_args
    assert loaded.class_names == ["a", "b", "c"] and loaded.palette == [[0, 0, 0]] * 3
    meta = torch.load(path, weights_only=True)["zoo"]
    assert meta["mean"] == list(model.mean) and meta["std"] == list(model.std)
    x = torch.randn(1, 3, 45, 61)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_load_lightning_checkpoint(tmp_path, tiny):
    model = build_model(tiny, "unet", num_classes=2).eval()
    meta = {"build_args": model.build_args, "class_names": None, "palette": None, "mean": [0.5] * 3, "std": [0.5] * 3}
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    state["class_weights"] = torch.ones(2)  # a module buffer outside the model
    torch.save({"zoo": meta, "state_dict": state, "epoch": 3, "optimizer_states": []}, tmp_path / "last.ckpt")
    loaded = load_model(tmp_path / "last.ckpt")
    assert loaded.class_names is None
    x = torch.randn(1, 3, 33, 35)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_load_errors(tmp_path, tiny):
    with pytest.raises(FileNotFoundError, match="no such checkpoint: .*missing.pt"):
        load_model(tmp_path / "missing.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt is not a zoo model file: expected the keys 'zoo' and 'state_dict'"):
        load_model(tmp_path / "other.pt")
    model = build_model(tiny, "fcn", num_classes=2)
    path = save_model(model, tmp_path / "model.pt")
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["zoo"]["build_args"]["num_classes"] = 3
    torch.save(checkpoint, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="bad.pt: the weights do not fit the model its build_args describe"):
        load_model(tmp_path / "bad.pt")
    checkpoint["hyper_parameters"] = argparse.Namespace(lr=0.1)  # an arbitrary object is not unpickled
    torch.save(checkpoint, tmp_path / "pickled.ckpt")
    with pytest.raises(ValueError, match="pickled.ckpt holds objects other than tensors and plain data; not loaded"):
        load_model(tmp_path / "pickled.ckpt")
    with pytest.raises(ValueError, match="class_names has 1 entries, expected num_classes=2"):
        save_model(model, tmp_path / "x.pt", class_names=["a"])


def test_bad_names_and_arguments(tiny):
    with pytest.raises(KeyError, match="unknown decoder 'segformer'; valid names: deeplabv3, deeplabv3plus, dpc, fcn"):
        build_model(tiny, "segformer")
    with pytest.raises(KeyError, match="unknown encoder 'no-such-encoder'"):
        build_model("no-such-encoder", "fcn")
    with pytest.raises(ValueError, match="num_classes must be a positive int, got 0"):
        build_model(tiny, "fcn", num_classes=0)
    with pytest.raises(ValueError, match="decoder 'unet' takes no argument variant; it takes: decoder_channels"):
        build_model(tiny, "unet", variant="8s")
    with pytest.raises(ValueError, match="expected an N×C×H×W batch"):
        build_model(tiny, "fcn")(torch.randn(3, 32, 32))
