"""The zoo's encoders in smp with encoder_depth < 5: only what the depth needs is built, and every parameter learns."""

from __future__ import annotations

import pytest
import segmentation_models_pytorch as smp
import torch

from zoo.encoders import build_encoder, list_encoders
from zoo.flops import count_params

pytestmark = pytest.mark.usefixtures("one_thread")
NAMES = ["xception65", "xception", "inception_v3", "googlenet"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_truncated_encoder_equals_the_full_one_and_every_parameter_learns(name: str, depth: int) -> None:
    torch.manual_seed(0)
    full = build_encoder(name, width=0.125).eval()
    cut = build_encoder(name, width=0.125)
    cut.load_state_dict(full.state_dict(), strict=False)
    cut.truncate(depth)
    assert [f.reduction for f in cut.feature_info] == [f.reduction for f in full.feature_info][:depth]
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        expected = full(x)[:depth]
    outputs = cut.eval()(x)
    assert len(outputs) == depth
    for got, want in zip(outputs, expected, strict=True):
        torch.testing.assert_close(got, want)
    cut.train()
    sum(o.sum() for o in cut(x)).backward()
    assert [n for n, p in cut.named_parameters() if p.grad is None] == []
    assert count_params(cut) < count_params(full)


def test_pspnet_on_a_zoo_encoder_builds_only_three_stages() -> None:
    zoo_pspnet = smp.PSPNet(encoder_name="zoo-xception65", encoder_weights=None)
    timm_pspnet = smp.PSPNet(encoder_name="tu-xception65", encoder_weights=None)
    assert count_params(zoo_pspnet) < 1.2 * count_params(timm_pspnet)  # 39.16M before, against ~3.0M
    x = torch.rand(1, 3, 64, 64)
    zoo_pspnet(x).sum().backward()
    assert [n for n, p in zoo_pspnet.named_parameters() if p.grad is None] == []


@pytest.mark.parametrize("name", list_encoders())
@pytest.mark.parametrize("depth", [3, 5])
def test_every_zoo_encoder_scripts_in_smp_and_gives_the_eager_outputs(name: str, depth: int) -> None:
    torch.manual_seed(0)
    model = smp.Unet(encoder_name=f"zoo-{name}", encoder_weights=None, encoder_depth=depth,
                     decoder_channels=[16, 8, 8, 8, 8][:depth], width=0.125).eval()  # fmt: skip
    scripted = torch.jit.script(model)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))
        for got, want in zip(scripted.encoder(x), model.encoder(x), strict=True):
            assert torch.equal(got, want)
