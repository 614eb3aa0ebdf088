"""Dataset readers on generated VOC, SBD, Cityscapes and folder trees, including every bad input."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

import zoo
from zoo.data.cityscapes import label_ids_to_train_ids
from zoo.data.io import read_image, read_mask, voc_colormap, write_mask
from zoo.data.transforms import eval_transform

RNG = np.random.default_rng(0)


def _image(h: int, w: int) -> np.ndarray:
    return RNG.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _mask(h: int, w: int, num_classes: int = 21) -> np.ndarray:
    mask = RNG.integers(0, num_classes, size=(h, w)).astype(np.uint8)
    mask[0, :] = 255
    return mask


def _save_jpg(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, quality=100, subsampling=0)


def make_voc(root: Path, sizes: dict[str, tuple[int, int]], lists: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """Write a VOC2012 tree; returns the masks by id."""
    masks = {}
    for name, (h, w) in sizes.items():
        _save_jpg(root / "JPEGImages" / f"{name}.jpg", _image(h, w))
        masks[name] = _mask(h, w)
        write_mask(root / "SegmentationClass" / f"{name}.png", masks[name])
    for split, ids in lists.items():
        (root / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return masks


@pytest.fixture
def voc(tmp_path):
    root = tmp_path / "VOC2012"
    sizes = {"a": (40, 50), "b": (33, 41), "c": (36, 36)}
    masks = make_voc(root, sizes, {"train": ["a", "b"], "val": ["c"], "trainval": ["a", "b", "c"]})
    return root, masks


def _error(exc_type, pattern: str, fn, *args, **kwargs):
    with pytest.raises(exc_type, match=pattern):
        fn(*args, **kwargs)


# ------------------------------------------------------------------------------------------------- io


def test_voc_colormap_and_palette_png_roundtrip(tmp_path):
    cmap = voc_colormap(256)
    assert cmap[:4].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]
    assert cmap[15].tolist() == [192, 128, 128] and cmap[255].tolist() == [224, 224, 192]
    mask = _mask(35, 47)
    path = write_mask(tmp_path / "m.png", mask)
    with Image.open(path) as img:
        assert img.mode == "P"
        colours = np.asarray(img.convert("RGB"))
    np.testing.assert_array_equal(read_mask(path), mask)  # palette indices, not colours
    np.testing.assert_array_equal(colours, cmap[mask])


def test_read_image_converts_to_rgb(tmp_path):
    gray = RNG.integers(0, 256, size=(34, 40), dtype=np.uint8)
    Image.fromarray(gray, mode="L").save(tmp_path / "gray.png")
    np.testing.assert_array_equal(read_image(tmp_path / "gray.png"), np.repeat(gray[..., None], 3, axis=2))

    rgba = RGNA = RNG.integers(0, 256, size=(34, 40, 4), dtype=np.uint8)
    Image.fromarray(RGNA, mode="RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), rgba[..., :3])

    deep = RNG.integers(0, 65536, size=(34, 40)).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    out = read_image(tmp_path / "deep.png")
    assert out.shape == (34, 40, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 1], np.round(deep / 257).astype(np.uint8))

    write_mask(tmp_path / "pal.png", _mask(34, 40))
    np.testing.assert_array_equal(read_image(tmp_path / "pal.png"), voc_colormap()[read_mask(tmp_path / "pal.png")])


def test_read_image_applies_exif_orientation(tmp_path):
    image = _image(34, 50)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed
    Image.fromarray(image).save(tmp_path / "r.png", exif=exif)
    np.testing.assert_array_equal(read_image(tmp_path / "r.png"), np.rot90(image, k=-1))


def test_read_image_bad_files(tmp_path):
    _save_jpg(tmp_path / "x.jpg", _image(64, 64))
    data = (tmp_path / "x.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.jpg").write_text("not an image")
    _error(
        ValueError, re.escape(f"cannot read image {tmp_path / 'cut.jpg'}: truncated"), read_image, tmp_path / "cut.jpg"
    )
    _error(ValueError, re.escape(f"cannot read image {tmp_path / 'text.jpg'}"), read_image, tmp_path / "text.jpg")
    _error(
        FileNotFoundError,
        re.escape(f"image file not found: {tmp_path / 'none.jpg'}"),
        read_image,
        tmp_path / "none.jpg",
    )


def test_read_mask_modes(tmp_path):
    values = np.array([[0, 1, 255], [2, 3, 4]], np.uint16)
    Image.fromarray(values).save(tmp_path / "m16.png")
    assert Image.open(tmp_path / "m16.png").mode.startswith("I")
    np.testing.assert_array_equal(read_mask(tmp_path / "m16.png"), values.astype(np.uint8))
    Image.fromarray(np.array([[0, 300]], np.uint16)).save(tmp_path / "big16.png")
    _error(
        ValueError,
        re.escape(f"mask {tmp_path / 'big16.png'}:") + ".*expected class ids",
        read_mask,
        tmp_path / "big16.png",
    )
    gray_rgb = np.repeat(values.astype(np.uint8)[..., None], 3, axis=2)
    Image.fromarray(gray_rgb).save(tmp_path / "grayrgb.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "grayrgb.png"), values.astype(np.uint8))
    Image.fromarray(voc_colormap()[values.astype(np.uint8)]).save(tmp_path / "colour.png")
    _error(
        ValueError, re.escape(f"mask {tmp_path / 'colour.png'}: colour (RGB) mask"), read_mask, tmp_path / "colour.png"
    )


# ------------------------------------------------------------------------------------------------ voc


def test_voc_reads_splits(voc):
    root, masks = voc
    data = zoo.build_dataset("voc", root=root, split="train")
    assert data.num_classes == 21 and len(data.classes) == 21 and data.classes[15] == "person"
    assert data.palette[1] == (128, 0, 0) and data.ignore_index == 255
    assert len(data) == 2 and data.names == ["a", "b"]
    item = data[1]
    assert item["name"] == "b" and item["image"].shape == (33, 41, 3) and item["image"].dtype == np.uint8
    assert item["mask"].dtype == np.uint8
    np.testing.assert_array_equal(item["mask"], masks["b"])
    assert len(zoo.build_dataset("voc", root=root, split="trainval")) == 3


def test_voc_with_transform_gives_tensors(voc):
    root, masks = voc
    data = zoo.build_dataset("voc", root=root, split="val", transform=eval_transform())
    item = data[0]
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 36, 36)
    assert item["mask"].dtype == torch.long
    np.testing.assert_array_equal(item["mask"].numpy(), masks["c"])


def test_voc_classes_txt_replaces_voc_classes(voc):
    root, _ = voc
    (root / "classes.txt").write_text("bg\nthing\n")
    with pytest.raises(ValueError, match="values .* outside \\{0..1, 255\\}"):
        zoo.build_dataset("voc", root=root, split="train")[0]
    data = zoo.build_dataset("voc", root=root, split="train", classes=[f"c{i}" for i in range(21)])
    assert data.num_classes == 21 and data.classes[3] == "c3"


def test_voc_bad_inputs(voc, tmp_path):
    root, _ = voc
    lists = root / "ImageSets" / "Segmentation"
    _error(FileNotFoundError, re.escape(f"voc root not found: {tmp_path / 'nope'}"), zoo.build_dataset, "voc",
           root=tmp_path / "nope", split="train")  # fmt: skip
    _error(FileNotFoundError, re.escape(f"split list not found: {lists / 'test.txt'}"), zoo.build_dataset, "voc",
           root=root, split="test")  # fmt: skip
    (lists / "empty.txt").write_text("\n")
    _error(ValueError, re.escape(f"split list {lists / 'empty.txt'} is empty"), zoo.build_dataset, "voc",
           root=root, split="empty")  # fmt: skip
    (lists / "ghost.txt").write_text("a\nghost\n")
    _error(FileNotFoundError, re.escape(f"image file not found: {root / 'JPEGImages' / 'ghost.jpg'}"),
           zoo.build_dataset, "voc", root=root, split="ghost")  # fmt: skip
    (root / "SegmentationClass" / "b.png").unlink()
    _error(FileNotFoundError, re.escape(f"mask file not found: {root / 'SegmentationClass' / 'b.png'}"),
           zoo.build_dataset, "voc", root=root, split="train")  # fmt: skip


def test_voc_bad_files(voc):
    root, _ = voc
    data = zoo.build_dataset("voc", root=root, split="trainval")
    seg = root / "SegmentationClass"
    write_mask(seg / "a.png", _mask(40, 49))  # one column short
    _error(ValueError, re.escape(f"image {root / 'JPEGImages' / 'a.jpg'} is 50x40 but mask {seg / 'a.png'} is 49x40"),
           data.__getitem__, 0)  # fmt: skip
    Image.fromarray(voc_colormap()[_mask(33, 41)]).save(seg / "b.png")  # colour mask
    _error(ValueError, re.escape(f"mask {seg / 'b.png'}: colour (RGB) mask"), data.__getitem__, 1)
    interpolated = np.zeros((36, 36), np.uint8)
    interpolated[10:20, 10:20] = 15
    interpolated[9, 10:20] = 7  # a blend of 0 and 15 left by a bilinear resize
    interpolated[8, 10:20] = 22
    Image.fromarray(interpolated, mode="L").save(seg / "c.png")
    _error(ValueError, re.escape(f"mask {seg / 'c.png'}: values 22 outside {{0..20, 255}}"), data.__getitem__, 2)
    jpg = root / "JPEGImages" / "c.jpg"
    jpg.write_bytes(jpg.read_bytes()[:300])
    _error(ValueError, re.escape(f"cannot read image {jpg}: truncated, corrupt or not an image"), data.__getitem__, 2)


def _save_mat(path: Path, seg: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    gt = {"Segmentation": seg, "Boundaries": np.empty((0, 0)), "CategoriesPresent": np.unique(seg)}
    scipy.io.savemat(str(path), {"GTcls": gt})


def test_voc_train_aug_from_sbd_mat(voc, tmp_path):
    root, masks = voc
    sbd = tmp_path / "sbd" / "dataset"
    for name, (h, w) in {"d": (35, 44), "e": (37, 33)}.items():
        _save_jpg(root / "JPEGImages" / f"{name}.jpg", _image(h, w))
        masks[name] = RNG.integers(0, 21, size=(h, w)).astype(np.uint8)
        _save_mat(sbd / "cls" / f"{name}.mat", masks[name])
    _save_mat(sbd / "cls" / "a.mat", np.zeros((40, 50), np.uint8))  # VOC's own mask wins for a
    (sbd / "train.txt").write_text("d\nc\n")  # c is VOC val: removed
    (sbd / "val.txt").write_text("e\na\n")
    data = zoo.build_dataset("voc", root=root, split="train_aug", sbd_root=sbd)
    assert data.names == ["d", "e", "a", "b"]
    for index, name in enumerate(data.names):
        np.testing.assert_array_equal(data[index]["mask"], masks[name])
    (sbd / "cls" / "d.mat").write_bytes(b"garbage")
    _error(ValueError, re.escape(f"cannot read SBD mask {sbd / 'cls' / 'd.mat'}"), data.__getitem__, 0)


def test_voc_train_aug_from_segmentation_class_aug(voc):
    root, masks = voc
    aug = root / "SegmentationClassAug"
    for name, (h, w) in {"d": (35, 44), "e": (37, 33)}.items():
        _save_jpg(root / "JPEGImages" / f"{name}.jpg", _image(h, w))
        masks[name] = _mask(h, w)
    aug.mkdir()
    for name in "abcde":
        Image.fromarray(masks[name], mode="L").save(aug / f"{name}.png")
    data = zoo.build_dataset("voc", root=root, split="train_aug")
    assert data.names == ["a", "b", "d", "e"]  # every mask there plus VOC train, minus VOC val (c)
    for index, name in enumerate(data.names):
        np.testing.assert_array_equal(data[index]["mask"], masks[name])
    lists = root / "ImageSets" / "Segmentation"
    (lists / "train_aug.txt").write_text("/JPEGImages/e.jpg /SegmentationClassAug/e.png\n/JPEGImages/c.jpg x\n")
    assert zoo.build_dataset("voc", root=root, split="train_aug").names == ["e"]


def test_voc_train_aug_needs_a_source(voc):
    root, _ = voc
    _error(FileNotFoundError, re.escape(f"needs sbd_root= (SBD's dataset folder with cls/*.mat) or the folder "
                                        f"{root / 'SegmentationClassAug'}"),
           zoo.build_dataset, "voc", root=root, split="train_aug")  # fmt: skip


def test_voc_reads_written_shapes(tmp_path):
    from zoo.data.shapes import SHAPES_CLASSES, ShapesDataset, write_shapes

    write_shapes(tmp_path / "shapes", num_train=2, num_val=1, size=48)
    data = zoo.build_dataset("voc", root=tmp_path / "shapes", split="train")
    assert data.classes == list(SHAPES_CLASSES) and len(data) == 2
    np.testing.assert_array_equal(data[1]["mask"], ShapesDataset(split="train", size=48)[1]["mask"])


# ----------------------------------------------------------------------------------------- cityscapes

# Official table: label id -> train id for ids 0..33 (255 = ignore).
CITYSCAPES_TRAIN_ID = [
    255, 255, 255, 255, 255, 255, 255, 0, 1, 255, 255, 2, 3, 4, 255, 255, 255,
    5, 255, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 255, 255, 16, 17, 18,
]  # fmt: skip


def make_cityscapes(root: Path, frames: dict[str, list[str]], kind: str = "labelIds") -> dict[str, np.ndarray]:
    label_ids = {}
    for split, names in frames.items():
        for name in names:
            city = name.split("_")[0]
            _save_png = root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png"
            _save_png.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_image(33, 66)).save(_save_png)
            ids = RNG.choice(np.r_[np.arange(34), 255], size=(33, 66)).astype(np.uint8)
            gt = root / "gtFine" / split / city / f"{name}_gtFine_labelIds.png"
            gt.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(ids, mode="L").save(gt)
            label_ids[name] = ids
    return label_ids


def test_cityscapes_mapping_of_every_id():
    ids = np.array([list(range(34)) + [-1]])
    np.testing.assert_array_equal(label_ids_to_train_ids(ids)[0], CITYSCAPES_TRAIN_ID + [255])
    np.testing.assert_array_equal(label_ids_to_train_ids(np.array([[255]], np.uint8)), [[255]])  # -1 as uint8
    _error(ValueError, re.escape("labelIds mask x.png: values [34, 200]"), label_ids_to_train_ids,
           np.array([[34, 200, 7]], np.uint8), "x.png")  # fmt: skip


def test_cityscapes_reads_label_ids_and_train_ids(tmp_path):
    root = tmp_path / "cityscapes"
    ids = make_cityscapes(
        root, {"train": ["aachen_000000_000019", "bonn_000001_000019"], "val": ["lindau_000000_000019"]}
    )
    data = zoo.build_dataset("cityscapes", root=root, split="train")
    assert data.num_classes == 19 and data.classes[0] == "road" and data.classes[18] == "bicycle"
    assert data.palette[0] == (128, 64, 128) and data.palette[13] == (0, 0, 142)
    assert data.names == ["aachen_000000_000019", "bonn_000001_000019"]
    lut = np.array(CITYSCAPES_TRAIN_ID + [255] * (256 - 34), np.uint8)
    for index, name in enumerate(data.names):
        np.testing.assert_array_equal(data[index]["mask"], lut[ids[name]])
    # a labelTrainIds file beside it is used instead of the labelIds
    train_ids = RNG.integers(0, 19, size=(33, 66)).astype(np.uint8)
    gt = root / "gtFine" / "val" / "lindau"
    Image.fromarray(train_ids, mode="L").save(gt / "lindau_000000_000019_gtFine_labelTrainIds.png")
    np.testing.assert_array_equal(zoo.build_dataset("cityscapes", root=root, split="val")[0]["mask"], train_ids)


def test_cityscapes_bad_inputs(tmp_path):
    root = tmp_path / "cityscapes"
    make_cityscapes(root, {"train": ["aachen_000000_000019"], "val": ["lindau_000000_000019"]})
    _error(FileNotFoundError, re.escape(f"cityscapes split 'test' not found: {root / 'leftImg8bit' / 'test'}"),
           zoo.build_dataset, "cityscapes", root=root, split="test")  # fmt: skip
    (root / "leftImg8bit" / "test" / "berlin").mkdir(parents=True)
    _error(ValueError, "no images in .*test", zoo.build_dataset, "cityscapes", root=root, split="test")
    gt = root / "gtFine" / "val" / "lindau" / "lindau_000000_000019_gtFine_labelIds.png"
    gt.unlink()
    _error(FileNotFoundError, re.escape(f"mask file not found: {gt}"), zoo.build_dataset, "cityscapes", root=root,
           split="val")  # fmt: skip
    gt = root / "gtFine" / "train" / "aachen" / "aachen_000000_000019_gtFine_labelIds.png"
    Image.fromarray(np.full((33, 66), 40, np.uint8), mode="L").save(gt)
    data = zoo.build_dataset("cityscapes", root=root, split="train")
    _error(ValueError, re.escape(f"labelIds mask {gt}: values [40]"), data.__getitem__, 0)


# --------------------------------------------------------------------------------------------- folder


def make_folder(root: Path, stems: list[str], sub: str = "") -> dict[str, np.ndarray]:
    masks = {}
    for stem in stems:
        (root / "images" / sub).mkdir(parents=True, exist_ok=True)
        Image.fromarray(_image(34, 38)).save(root / "images" / sub / f"{stem}.png")
        masks[stem] = _mask(34, 38, num_classes=3)
        write_mask(root / "masks" / sub / f"{stem}.png", masks[stem])
    return masks


def test_folder_split_layouts(tmp_path):
    root = tmp_path / "mine"
    masks = make_folder(root, ["x", "y", "z"])
    (root / "classes.txt").write_text("sky\nroad\ncar\n")
    data = zoo.build_dataset("folder", root=root, split=None)
    assert data.classes == ["sky", "road", "car"] and data.num_classes == 3 and data.names == ["x", "y", "z"]
    np.testing.assert_array_equal(data[2]["mask"], masks["z"])
    (root / "splits").mkdir()
    (root / "splits" / "val.txt").write_text("z\nx\n")
    assert zoo.build_dataset("folder", root=root, split="val").names == ["z", "x"]
    masks_train = make_folder(root, ["p", "q"], sub="train")
    data = zoo.build_dataset("folder", root=root, split="train", classes=["a", "b", "c"], palette=[(1, 2, 3)] * 3)
    assert data.names == ["p", "q"] and data.classes == ["a", "b", "c"] and data.palette[0] == (1, 2, 3)
    np.testing.assert_array_equal(data[1]["mask"], masks_train["q"])


def test_folder_bad_inputs(tmp_path):
    root = tmp_path / "mine"
    make_folder(root, ["x", "y"])
    _error(FileNotFoundError, re.escape(f"write one name per line to {root / 'classes.txt'}"), zoo.build_dataset,
           "folder", root=root, split=None)  # fmt: skip
    (root / "classes.txt").write_text("sky\nroad\n")
    expected = f"neither {root / 'splits' / 'train.txt'} nor the folder {root / 'images' / 'train'}"
    _error(FileNotFoundError, re.escape(expected), zoo.build_dataset, "folder", root=root, split="train")
    (root / "splits").mkdir()
    (root / "splits" / "val.txt").write_text("x\nw\n")
    _error(FileNotFoundError, re.escape(f"image file not found: {root / 'images' / 'w'}.*"), zoo.build_dataset,
           "folder", root=root, split="val")  # fmt: skip
    (root / "masks" / "y.png").unlink()
    _error(FileNotFoundError, re.escape(f"mask file not found: {root / 'masks' / 'y.png'}"), zoo.build_dataset,
           "folder", root=root, split=None)  # fmt: skip
    write_mask(root / "masks" / "y.png", np.full((34, 38), 2, np.uint8))  # 2 is not a class of 2
    data = zoo.build_dataset("folder", root=root, split=None)
    _error(ValueError, re.escape(f"mask {root / 'masks' / 'y.png'}: values 2 outside {{0..1, 255}}"),
           data.__getitem__, 1)  # fmt: skip


def test_every_registered_dataset_satisfies_the_declared_contract(tmp_path):
    """zoo.registry.SegmentationDataset: what training and zoo data rely on, for every entry of DATASETS."""
    from zoo.data import DATASETS
    from zoo.data.shapes import write_shapes
    from zoo.registry import SegmentationDataset

    write_shapes(tmp_path / "voc", num_train=2, num_val=1, size=32)
    make_cityscapes(tmp_path / "cityscapes", {"train": ["aachen_000000_000019"]})
    (tmp_path / "folder" / "images").mkdir(parents=True)
    (tmp_path / "folder" / "masks").mkdir()
    (tmp_path / "folder" / "classes.txt").write_text("\ufeff# my classes\nsky\nground\n")  # a BOM and a comment
    Image.fromarray(_image(8, 8)).save(tmp_path / "folder" / "images" / "a.png")
    Image.fromarray(_mask(8, 8, 2)).save(tmp_path / "folder" / "masks" / "a.png")
    built = {
        "shapes": zoo.build_dataset("shapes", split="val", num_images=2, size=32),
        "shapes-hard": zoo.build_dataset("shapes-hard", split="val", num_images=2, size=32),
        "voc": zoo.build_dataset("voc", root=tmp_path / "voc", split="train"),
        "shapes-voc": zoo.build_dataset("shapes-voc", root=tmp_path / "voc", split="val"),
        "cityscapes": zoo.build_dataset("cityscapes", root=tmp_path / "cityscapes", split="train"),
        "folder": zoo.build_dataset("folder", root=tmp_path / "folder", split=None),
    }
    assert set(built) == set(DATASETS.names())
    for name, dataset in built.items():
        assert isinstance(dataset, SegmentationDataset), name
        assert len(dataset.classes) == dataset.num_classes == len(dataset.palette), name
        item = dataset.load(0)
        assert item["image"].dtype == np.uint8 and item["image"].shape[:2] == item["mask"].shape, name
        assert set(np.unique(item["mask"]).tolist()) <= {*range(dataset.num_classes), dataset.ignore_index}, name
        root = {"shapes": None, "shapes-hard": None, "shapes-voc": tmp_path / "voc"}.get(name, tmp_path / name)
        assert isinstance(DATASETS.get(name).find_splits(root=root), list), name
    assert built["folder"].classes == ["sky", "ground"]


def test_every_dataset_that_writes_its_data_follows_the_prepare_contract(tmp_path):
    """zoo.registry.PreparableDataset (data.prepare): a dry run writes nothing, a folder of other files is refused,
    the class's classes are what it reads back, and a second prepare leaves the files alone."""
    from zoo.data import DATASETS
    from zoo.registry import PreparableDataset

    preparable = [name for name in DATASETS.names() if isinstance(DATASETS.get(name), PreparableDataset)]
    assert preparable == ["shapes-voc"]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("a user's file\n")
    for name in preparable:
        cls, root = DATASETS.get(name), tmp_path / name
        args = {"num_train": 2, "num_val": 1, "size": 32}
        assert cls.prepare(root, dry_run=True, **args) is True and not root.exists(), name
        with pytest.raises(TypeError, match="num_trian"):
            cls.prepare(root, dry_run=True, num_trian=2)
        with pytest.raises(ValueError, match="holds files the zoo did not write"):
            cls.prepare(foreign, **args)
        assert sorted(p.name for p in foreign.iterdir()) == ["mine.txt"], name
        assert cls.prepare(root, **args) is True, name
        files = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
        assert cls.prepare(root, **args) is False and {p: p.stat().st_mtime_ns for p in root.rglob("*")} == files
        dataset = cls(root=root, split="train")
        assert len(dataset) == 2 and dataset.classes == cls.classes and dataset.palette == cls.palette, name
