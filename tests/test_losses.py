"""Losses by name: every term ignores the ignore label, sums are weighted, smp's losses are used where smp has them."""

from __future__ import annotations

import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from zoo.train.losses import LOSS_NAMES, OhemCrossEntropy, build_loss, parse_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def _batch(seed: int = 0, ignore: int = 255) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 4, 9, 11, generator=g)
    target = torch.randint(0, 4, (2, 9, 11), generator=g)
    target[:, :3] = ignore
    return logits, target


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("ignore_index", [255, 0])
def test_ignored_pixels_change_nothing(name: str, ignore_index: int) -> None:
    logits, target = _batch(ignore=ignore_index)
    if ignore_index == 0:
        target = target.where(target != 255, 0)
    loss = build_loss(name, ignore_index=ignore_index)
    changed = logits.clone()
    changed[:, :, :3] = torch.randn(2, 4, 3, 11) * 10
    changed.requires_grad_(True)
    value = loss(changed, target)
    torch.testing.assert_close(value, loss(logits, target))
    value.backward()
    assert changed.grad[:, :, :3].abs().max() == 0
    assert changed.grad[:, :, 3:].abs().max() > 0


def test_cross_entropy_and_weighted_sum() -> None:
    logits, target = _batch()
    ce = F.cross_entropy(logits, target, ignore_index=255)
    torch.testing.assert_close(build_loss("ce")(logits, target), ce)
    dice = smp.losses.DiceLoss("multiclass", ignore_index=255)(logits, target)
    torch.testing.assert_close(build_loss("ce + 0.5*dice")(logits, target), ce + 0.5 * dice)
    weights = [1.0, 2.0, 0.5, 3.0]
    expected = F.cross_entropy(logits, target, weight=torch.tensor(weights), ignore_index=255)
    torch.testing.assert_close(build_loss("ce", class_weights=weights)(logits, target), expected)


def test_smp_losses_are_used() -> None:
    loss = build_loss("dice+focal+lovasz")
    assert [type(m) for m in loss.losses] == [smp.losses.DiceLoss, smp.losses.FocalLoss, smp.losses.LovaszLoss]


def test_ohem_keeps_hard_pixels_only() -> None:
    target = torch.tensor([[[0, 1, 255, 1]]])
    logits = torch.full((1, 2, 1, 4), 0.0)
    logits[0, 0, 0, 0] = 10.0  # pixel 0 is easy (p(true) ~ 1); pixels 1 and 3 are hard (p = 0.5)
    ohem = OhemCrossEntropy(threshold=0.7, min_kept=1)
    torch.testing.assert_close(ohem(logits, target), torch.tensor(0.6931471805599453))
    everything = OhemCrossEntropy(threshold=0.7, min_kept=10)  # min_kept beyond the hard ones keeps the easiest too
    expected = F.cross_entropy(logits, target, ignore_index=255)
    torch.testing.assert_close(everything(logits, target), expected)


def test_parse_errors() -> None:
    assert parse_loss("CE+0.25*ohem") == [(1.0, "ce"), (0.25, "ohem")]
    valid = "ce, dice, focal, lovasz, ohem"
    with pytest.raises(ValueError, match=f"unknown loss 'tversky' in 'ce\\+tversky'; valid: {valid}"):
        parse_loss("ce+tversky")
    with pytest.raises(ValueError, match="expected NAME or WEIGHT\\*NAME terms"):
        parse_loss("ce+-1*dice")
