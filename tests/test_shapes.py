"""The synthetic ``shapes`` and ``shapes-hard`` datasets: determinism, labels, and the VOC layout written to disk."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from zoo.data import DATASETS, build_dataset
from zoo.data.shapes import SHAPES_CLASSES, SHAPES_PALETTE, ShapesDataset, make_shapes_item, write_shapes
from zoo.data.shapes_hard import HARD_CLASSES, HardShapesDataset, make_hard_shapes_item
from zoo.errors import ArgumentError


def test_registered_and_described():
    assert "shapes" in DATASETS
    data = build_dataset("shapes", split="train", num_images=3, size=40, seed=1)
    assert len(data) == 3
    assert data.classes == list(SHAPES_CLASSES) and data.num_classes == len(SHAPES_CLASSES) == 5
    assert len(data.palette) == data.num_classes and data.ignore_index == 255


def test_item_types_and_values():
    item = ShapesDataset(split="val", num_images=2, size=48)[1]
    assert item["image"].shape == (48, 48, 3) and item["image"].dtype == np.uint8
    assert item["mask"].shape == (48, 48) and item["mask"].dtype == np.uint8
    assert set(np.unique(item["mask"])) <= {0, 1, 2, 3, 4, 255}
    assert item["name"] == "val_00001"


def test_deterministic_per_seed_split_and_index():
    a, b = make_shapes_item(3, "train", 5, 64), make_shapes_item(3, "train", 5, 64)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    for other in (
        make_shapes_item(4, "train", 5, 64),
        make_shapes_item(3, "val", 5, 64),
        make_shapes_item(3, "train", 6, 64),
    ):
        assert not np.array_equal(a[0], other[0])
    # an item does not depend on which items were read before it
    data = ShapesDataset(split="train", num_images=6, size=64, seed=3)
    assert np.array_equal(data[5]["mask"], a[1])


def test_every_class_appears_and_outlines_are_ignored():
    masks = np.stack([make_shapes_item(0, "train", i, 64)[1] for i in range(20)])
    assert set(np.unique(masks)) == {0, 1, 2, 3, 4, 255}
    # two neighbouring labelled pixels of different classes never touch: an ignore band separates them
    for a, b in ((masks[:, 1:, :], masks[:, :-1, :]), (masks[:, :, 1:], masks[:, :, :-1])):
        labelled = (a != 255) & (b != 255)
        assert not np.any(labelled & (a != b))


def test_transform_gives_tensors():
    def transform(image, mask):
        return {"image": torch.from_numpy(image).permute(2, 0, 1).float(), "mask": torch.from_numpy(mask)}

    item = ShapesDataset(split="train", num_images=1, size=40, transform=transform)[0]
    assert item["image"].shape == (3, 40, 40) and item["mask"].dtype == torch.long


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"split": "trainval"}, "shapes: unknown split 'trainval'; valid splits: train, val, test"),
        ({"num_images": 0}, "shapes: num_images must be positive, got 0"),
        ({"size": 16}, "shapes: size must be at least 32 pixels, got 16"),
        ({"root": "some/dir"}, "shapes: root='some/dir' given, but the shapes dataset is drawn in memory"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ShapesDataset(**kwargs)[0]


def test_index_out_of_range():
    with pytest.raises(IndexError, match="shapes: index 2 out of range for 2 items"):
        ShapesDataset(split="val", num_images=2, size=40)[2]


def test_write_shapes_voc_layout(tmp_path):
    root = write_shapes(tmp_path / "shapes", num_train=3, num_val=2, seed=7, size=48)
    lists = root / "ImageSets" / "Segmentation"
    train = (lists / "train.txt").read_text().split()
    val = (lists / "val.txt").read_text().split()
    assert train == [f"shapes_train_{i:05d}" for i in range(3)] and len(val) == 2
    assert (lists / "trainval.txt").read_text().split() == train + val
    assert (root / "classes.txt").read_text().splitlines() == list(SHAPES_CLASSES)
    for split, names in (("train", train), ("val", val)):
        for index, name in enumerate(names):
            image_ref, mask_ref = make_shapes_item(7, split, index, 48)
            label = Image.open(root / "SegmentationClass" / f"{name}.png")
            assert label.mode == "P"
            assert label.getpalette()[: 3 * len(SHAPES_PALETTE)] == [c for rgb in SHAPES_PALETTE for c in rgb]
            assert np.array_equal(np.asarray(label), mask_ref)
            image = np.asarray(Image.open(root / "JPEGImages" / f"{name}.jpg").convert("RGB"))
            assert image.shape == image_ref.shape
            assert np.abs(image.astype(int) - image_ref).mean() < 6  # JPEG at quality 95


def test_write_shapes_refuses_a_folder_of_other_files_naming_root(tmp_path):
    (tmp_path / "mine.txt").write_text("x")
    with pytest.raises(ArgumentError) as error:
        write_shapes(tmp_path, num_train=1, num_val=1)
    assert error.value.argument == "root" and error.value.also == ("force",)
    assert str(error.value) == (
        f"root: {str(tmp_path)!r} is not empty and holds no .zoo-shapes marker (it was not written by the zoo): not "
        "writing the shapes data into it; choose a new or empty folder, or pass force to overwrite"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_write_shapes_rejects_empty_split(tmp_path):
    with pytest.raises(ValueError, match="num_train and num_val must be positive, got 0 and 2"):
        write_shapes(tmp_path, num_train=0, num_val=2)


def test_voc_reader_reads_written_shapes_with_their_classes(tmp_path):
    root = write_shapes(tmp_path / "shapes", num_train=2, num_val=3, seed=1, size=40)
    data = build_dataset("voc", root=root, split="val")
    assert len(data) == 3
    assert data.classes == list(SHAPES_CLASSES) and data.num_classes == 5
    assert [tuple(c) for c in data.palette] == list(SHAPES_PALETTE)
    for index in range(3):
        assert np.array_equal(np.asarray(data[index]["mask"]), make_shapes_item(1, "val", index, 40)[1])


def test_hard_variant_registered_with_its_classes():
    data = build_dataset("shapes-hard", split="val", num_images=2)
    assert isinstance(data, HardShapesDataset) and data.classes == list(HARD_CLASSES) and data.num_classes == 9
    assert len(data.palette) == 9 and len(set(data.palette)) == 9
    item = data[1]
    assert item["image"].shape == (96, 96, 3) and item["name"] == "val_00001"
    assert np.array_equal(item["mask"], make_hard_shapes_item(0, "val", 1, 96)[1])


def test_hard_variant_is_deterministic_and_differs_from_the_easy_one():
    a, b = make_hard_shapes_item(3, "train", 5, 64), make_hard_shapes_item(3, "train", 5, 64)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    for other in (make_hard_shapes_item(4, "train", 5, 64), make_hard_shapes_item(3, "val", 5, 64)):
        assert not np.array_equal(a[0], other[0])
    assert not np.array_equal(a[1], make_shapes_item(3, "train", 5, 64)[1])


def test_hard_variant_has_every_class_several_per_image_and_colours_that_do_not_give_the_class():
    items = [make_hard_shapes_item(0, "train", i, 64) for i in range(30)]
    masks = np.stack([m for _, m in items])
    assert set(np.unique(masks)) == set(range(9)) | {255}
    assert max(len(set(np.unique(m)) - {0, 255}) for m in masks) >= 3
    # a class's mean colour varies across images far more than the easy variant's jitter
    reds = [img[m == 1, 0].mean() for img, m in items if (m == 1).sum() > 20]
    assert len(reds) >= 3 and np.std(reds) > 15


def test_hard_variant_checks_its_size():
    with pytest.raises(ValueError, match="shapes-hard: size must be at least 32 pixels, got 16"):
        make_hard_shapes_item(0, "train", 0, 16)
