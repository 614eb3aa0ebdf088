"""Augmentation pipelines: DeepLab's padding with 255, nearest masks, crop shapes, 0..1 tensors, worker seeding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from zoo.data.transforms import PadCollate, eval_transform, seed_worker, train_transform


def _blocks(h: int, w: int, labels=(0, 1, 2, 255), seed: int = 0) -> np.ndarray:
    """A mask of 4×4 blocks of labels, so any interpolation other than nearest makes new values."""
    rng = np.random.default_rng(seed)
    small = rng.choice(np.array(labels, np.uint8), size=(h // 4 + 1, w // 4 + 1))
    return np.kron(small, np.ones((4, 4), np.uint8))[:h, :w]


def test_padding_fills_mask_with_ignore_and_image_with_zero():
    image = np.full((20, 30, 3), 200, np.uint8)
    mask = np.zeros((20, 30), np.uint8)
    t = train_transform(48, scale=(1.0, 1.0), hflip=False, seed=0)
    out = t(image=image, mask=mask)
    assert out["image"].shape == (3, 48, 48) and out["mask"].shape == (48, 48)
    padded = np.ones((48, 48), bool)
    padded[:20, :30] = False
    m = out["mask"].numpy()
    assert (m[padded] == 255).all() and (m[~padded] == 0).all()
    torch.testing.assert_close(out["image"][:, 40, 40], torch.zeros(3))
    torch.testing.assert_close(out["image"][:, 5, 5], torch.full((3,), 200 / 255))


@pytest.mark.parametrize("crop", [33, (40, 57)])
def test_scaled_masks_keep_labels_and_shapes_equal_crop(crop):
    t = train_transform(crop, scale=(0.5, 2.0), seed=1)
    height, width = (crop, crop) if isinstance(crop, int) else crop
    for size in [(37, 45), (64, 90), (120, 41)]:
        image = np.random.default_rng(2).integers(0, 256, size=(*size, 3), dtype=np.uint8)
        mask = _blocks(*size)
        for _ in range(6):
            out = t(image=image, mask=mask)
            assert out["image"].shape == (3, height, width) and out["image"].dtype == torch.float32
            assert out["mask"].shape == (height, width)
            assert set(np.unique(out["mask"].numpy())) <= {0, 1, 2, 255}


def test_scale_range_is_applied():
    # with scale fixed at 2 and a crop as large as the scaled image, nothing is padded and every
    # block of the input is doubled: the crop equals the nearest-upsampled mask
    mask = _blocks(20, 24)
    t = train_transform((40, 48), scale=(2.0, 2.0), hflip=False, seed=0)
    out = t(image=np.zeros((20, 24, 3), np.uint8), mask=mask)["mask"].numpy()
    np.testing.assert_array_equal(out, np.kron(mask, np.ones((2, 2), np.uint8)))


def test_flip_happens_and_keeps_pairs_aligned():
    image = np.zeros((16, 32, 3), np.uint8)
    image[:, :16] = 255
    mask = np.zeros((16, 32), np.uint8)
    mask[:, :16] = 1
    t = train_transform((16, 32), scale=(1.0, 1.0), hflip=True, seed=3)
    flipped = 0
    for _ in range(20):
        out = t(image=image, mask=mask)
        left_white = bool(out["image"][0, 0, 0] > 0.5)
        assert left_white == bool(out["mask"][0, 0] == 1)
        flipped += not left_white
    assert 0 < flipped < 20


def test_seeded_pipelines_repeat_and_strict():
    image = np.random.default_rng(0).integers(0, 256, size=(50, 60, 3), dtype=np.uint8)
    mask = _blocks(50, 60)
    a, b = (train_transform(33, seed=5) for _ in range(2))
    assert a.strict and b.strict
    for _ in range(3):
        torch.testing.assert_close(a(image=image, mask=mask)["image"], b(image=image, mask=mask)["image"])
    torch.manual_seed(7)
    c = train_transform(33)
    torch.manual_seed(7)
    d = train_transform(33)
    torch.testing.assert_close(c(image=image, mask=mask)["image"], d(image=image, mask=mask)["image"])


def test_eval_transform_scales_to_unit_range_without_resize():
    image = np.random.default_rng(0).integers(0, 256, size=(35, 47, 3), dtype=np.uint8)
    mask = _blocks(35, 47)
    out = eval_transform()(image=image, mask=mask)
    expected = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(out["image"], expected)
    np.testing.assert_array_equal(out["mask"].numpy(), mask)


class _Same(Dataset):
    """The same image four times, through a random pipeline."""

    def __init__(self):
        self.transform = train_transform(24, seed=0)
        self.image = np.random.default_rng(0).integers(0, 256, size=(40, 40, 3), dtype=np.uint8)
        self.mask = _blocks(40, 40)

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return self.transform(image=self.image, mask=self.mask)["image"]


def _run_loader(worker_init_fn):
    torch.manual_seed(0)
    loader = DataLoader(_Same(), batch_size=1, num_workers=2, worker_init_fn=worker_init_fn)
    return [batch[0] for batch in loader]


def test_seed_worker_differs_across_workers_and_repeats():
    plain = _run_loader(None)
    assert torch.equal(plain[0], plain[1])  # forked workers copy one generator: the problem seed_worker solves
    first, second = _run_loader(seed_worker), _run_loader(seed_worker)
    assert not torch.equal(first[0], first[1])  # items 0 and 1 come from different workers
    for x, y in zip(first, second, strict=True):
        torch.testing.assert_close(x, y)


def test_pad_collate_pads_images_with_zero_and_masks_with_ignore():
    items = [
        {"image": torch.ones(3, 4, 5), "mask": torch.zeros(4, 5, dtype=torch.long), "name": "a"},
        {"image": torch.ones(3, 6, 3), "mask": torch.ones(6, 3, dtype=torch.long), "name": "b"},
    ]
    batch = PadCollate(ignore_index=7)(items)
    assert batch["image"].shape == (2, 3, 6, 5) and batch["mask"].shape == (2, 6, 5) and batch["name"] == ["a", "b"]
    assert batch["image"][0, :, 4:].abs().sum() == 0 and batch["image"][1, :, :, 3:].abs().sum() == 0
    assert (batch["mask"][0, 4:] == 7).all() and (batch["mask"][1, :, 3:] == 7).all()
    assert (batch["mask"][0, :4, :5] == 0).all() and (batch["mask"][1, :6, :3] == 1).all()
