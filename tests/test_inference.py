"""Sliding-window, multi-scale and flip inference (zoo.inference.infer_logits)."""

from __future__ import annotations

import helpers
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zoo.infer.tta import infer_logits, window_starts


class Scaled(nn.Module):
    """A model whose logits are multiplied by a constant (randomly initialised logits are ~1e-5)."""

    def __init__(self, model: nn.Module, factor: float) -> None:
        super().__init__()
        self.model, self.factor = model, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * self.factor


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    net = helpers.tiny_model(num_classes=4).eval()
    with torch.no_grad():
        scale = net(torch.randn(1, 3, 64, 64)).abs().max().item()
    return Scaled(net, 1.0 / scale).eval()


def pointwise_model(num_classes: int = 3) -> nn.Module:
    """A 1×1 convolution: every pixel's logits depend on that pixel only (and it is flip-invariant)."""
    torch.manual_seed(1)
    return nn.Conv2d(3, num_classes, 1).eval()


@pytest.mark.parametrize(
    ("size", "crop", "stride", "expected"),
    [
        (100, 40, 30, [0, 30, 60]),
        (100, 40, 40, [0, 40, 60]),
        (40, 64, 32, [0]),
        (64, 64, 32, [0]),
        (65, 64, 16, [0, 1]),
    ],
)
def test_window_starts_cover_the_image(size: int, crop: int, stride: int, expected: list[int]) -> None:
    starts = window_starts(size, crop, stride)
    assert starts == expected
    covered = torch.zeros(size, dtype=torch.bool)
    for start in starts:
        covered[start : start + crop] = True
    assert covered.all()


def test_one_window_covering_the_image_equals_whole_image(model: nn.Module) -> None:
    x = torch.randn(2, 3, 57, 71)
    with torch.no_grad():
        whole = model(x)
    slid = infer_logits(model, x, slide=((64, 96), (32, 32)))
    assert slid.shape == (2, 4, 57, 71)
    torch.testing.assert_close(slid, whole)


def test_overlapping_windows_average_to_whole_image_for_a_pixelwise_model() -> None:
    net = pointwise_model()
    x = torch.randn(2, 3, 50, 77)
    with torch.no_grad():
        whole = net(x)
    slid = infer_logits(net, x, slide=((24, 32), (16, 20)), batch_size=3)
    torch.testing.assert_close(slid, whole, rtol=1e-5, atol=1e-5)


def test_windows_are_used_when_the_image_is_larger(model: nn.Module) -> None:
    x = torch.randn(1, 3, 70, 90)
    with torch.no_grad():
        whole = model(x)
    slid = infer_logits(model, x, slide=((40, 40), (30, 30)))
    assert slid.shape == whole.shape
    assert (slid - whole).abs().max() > 1e-2  # windows see less context than the whole image


def test_flip_of_a_flip_invariant_model_changes_nothing() -> None:
    net = pointwise_model()
    x = torch.randn(1, 3, 33, 45)
    torch.testing.assert_close(infer_logits(net, x, flip=True), infer_logits(net, x), rtol=1e-6, atol=1e-6)


def test_flip_tta_is_flip_equivariant(model: nn.Module) -> None:
    x = torch.randn(1, 3, 48, 61)
    out = infer_logits(model, x, flip=True)
    mirrored = infer_logits(model, x.flip(-1), flip=True)
    torch.testing.assert_close(mirrored, out.flip(-1), rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        expected = (model(x) + model(x.flip(-1)).flip(-1)) / 2
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_multi_scale_averages_resized_logits(model: nn.Module) -> None:
    x = torch.randn(1, 3, 40, 52)
    with torch.no_grad():
        half = F.interpolate(model(F.interpolate(x, size=(20, 26), mode="bilinear")), size=(40, 52), mode="bilinear")
        expected = (half + model(x)) / 2
    torch.testing.assert_close(infer_logits(model, x, scales=(0.5, 1.0)), expected, rtol=1e-5, atol=1e-5)


def test_batch_size_does_not_change_the_result(model: nn.Module) -> None:
    x = torch.randn(3, 3, 36, 44)
    full = infer_logits(model, x, flip=True, slide=((32, 32), (16, 16)))
    chunked = infer_logits(model, x, flip=True, slide=((32, 32), (16, 16)), batch_size=2)
    torch.testing.assert_close(chunked, full, rtol=1e-5, atol=1e-5)


def test_a_model_with_an_aux_head_gives_logits_in_eval() -> None:
    net = helpers.tiny_model("fcn", num_classes=2, aux_head=True).eval()
    x = torch.rand(2, 3, 33, 33)
    out = infer_logits(net, x)
    assert out.shape == (2, 2, 33, 33)
    with torch.no_grad():
        torch.testing.assert_close(out, net(x))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"slide": ((32, 32), (48, 16))}, "stride must not exceed the crop"),
        ({"slide": ((0, 32), (1, 1))}, "must be positive"),
        ({"slide": (32, 16)}, "slide must be"),
        ({"scales": (1.0, -0.5)}, "scales must be positive"),
        ({"batch_size": 0}, "batch_size must be positive"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        infer_logits(pointwise_model(), torch.randn(1, 3, 8, 8), **kwargs)


def test_non_batch_input_raises() -> None:
    with pytest.raises(ValueError, match="N×3×H×W"):
        infer_logits(pointwise_model(), torch.randn(3, 8, 8))
