"""Masks in other conventions: 0/255 binary masks, reduce_zero_label, another ignore value, colour masks, suffixes;
``zoo data check`` flags a convention it does not fit, ``zoo data stats`` counts classes and weights them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import zoo
from zoo.cli import main
from zoo.data.check import convention_problems
from zoo.data.colour import colour_to_index
from zoo.data.files import remap_labels
from zoo.data.io import read_mask, voc_palette, write_mask
from zoo.data.stats import class_stats
from zoo.train import SegmentationDataModule

ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}


def binary_folder(root: Path, count: int = 3) -> list[np.ndarray]:
    """A folder dataset of 0/255 binary masks (the usual binary format), two classes."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("background\nforeground\n")
    masks = []
    for i in range(count):
        mask = np.zeros((12, 16), np.uint8)
        mask[2 : 8 + i, 3:12] = 255
        Image.fromarray(np.full((12, 16, 3), 40 * i, np.uint8)).save(root / "images" / f"im{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"im{i}.png")
        masks.append(mask)
    return masks


def test_remap_labels() -> None:
    stored = np.array([[0, 1, 2, 255]], np.uint8)
    np.testing.assert_array_equal(remap_labels(stored, {255: 1}), [[0, 1, 2, 1]])
    np.testing.assert_array_equal(remap_labels(stored, reduce_zero_label=True), [[255, 0, 1, 255]])
    np.testing.assert_array_equal(remap_labels(stored, {2: 0}, reduce_zero_label=True), [[255, 0, 255, 255]])


def test_binary_masks_train_as_two_classes_with_mask_values(tmp_path: Path) -> None:
    masks = binary_folder(tmp_path)
    plain = zoo.build_dataset("folder", root=tmp_path, split=None)
    assert (plain[0]["mask"] == 255).any() and not (plain[0]["mask"] == 1).any()  # half of it would be ignored
    mapped = zoo.build_dataset("folder", root=tmp_path, split=None, mask_values={255: 1})
    np.testing.assert_array_equal(mapped[1]["mask"], (masks[1] == 255).astype(np.uint8))


def test_binary_masks_are_named_with_the_dataset_argument_in_the_library_and_the_flag_in_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    problem = (
        "class 'foreground' never occurs while 40% of the pixels are 255 (ignore): masks stored in another "
        "convention? For 0/255 binary masks use mask_values {255: 1}"
    )
    assert convention_problems(Counter({0: 60, 255: 40}), ["background", "foreground"], 255) == [problem]
    binary_folder(tmp_path)
    data = SegmentationDataModule(dataset="folder", root=str(tmp_path), train_split=None, val_split=None,
                                  crop_size=16, batch_size=2, num_workers=0)  # fmt: skip
    with pytest.raises(ValueError, match=r"use mask_values \{255: 1\} \(data.dataset_kwargs.mask_values\)$"):
        data.setup("fit")
    assert main(["data", "check", "--dataset", "folder", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out.replace("\n", "")
    assert "class 'foreground' never occurs while" in out and "use mask_values {255: 1} (--mask-values 255:1)" in out
    assert main(["data", "check", "--dataset", "folder", "--root", str(tmp_path), "--mask-values", "255:1"]) == 0


def test_reduce_zero_label_and_ignore_index(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    write_mask(tmp_path / "masks" / "a.png", np.array([[0, 1, 2, 3]] * 4, np.uint8))
    data = zoo.build_dataset("folder", root=tmp_path, split=None, classes=["x", "y", "z"], reduce_zero_label=True)
    np.testing.assert_array_equal(data[0]["mask"][0], [255, 0, 1, 2])
    with pytest.raises(ValueError, match=r"values 3 outside \{0\.\.2, 0\}"):
        zoo.build_dataset("folder", root=tmp_path, split=None, classes=["x", "y", "z"], ignore_index=0)[0]


def test_suffix_options(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "ann").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "img" / "a_leftImg8bit.png")
    write_mask(tmp_path / "ann" / "a_gtFine.png", np.ones((4, 4), np.uint8))
    data = zoo.build_dataset("folder", root=tmp_path, split=None, classes=["x", "y"], img_dir="img",
                             ann_dir="ann", img_suffix="_leftImg8bit.png", seg_map_suffix="_gtFine.png")  # fmt: skip
    assert data.names == ["a"] and data[0]["mask"].sum() == 16


def test_colour_to_index() -> None:
    palette = voc_palette(3)
    rgb = np.array([[palette[2], palette[0]], [palette[1], (1, 2, 3)]], np.uint8)
    with pytest.raises(ValueError, match=r"m.png: colour \(1, 2, 3\) is not in the palette"):
        colour_to_index(rgb, palette, where="m.png")
    np.testing.assert_array_equal(colour_to_index(rgb, palette, unknown=255), [[2, 0], [1, 255]])


def test_convert_colour_masks_command(tmp_path: Path) -> None:
    palette = voc_palette(21)
    index = np.arange(21, dtype=np.uint8).repeat(2).reshape(6, 7)
    (tmp_path / "colour").mkdir()
    Image.fromarray(np.array(palette, np.uint8)[index]).save(tmp_path / "colour" / "m.png")
    argv = ["data", "convert-colour-masks", "--input", str(tmp_path / "colour"), "--output", str(tmp_path / "out"),
            "--palette", "voc"]  # fmt: skip
    assert main(argv) == 0
    np.testing.assert_array_equal(read_mask(tmp_path / "out" / "m.png"), index)
    assert main(argv) == 2  # a non-empty output folder needs --force
    assert main([*argv, "--force"]) == 0


def test_stats_and_median_frequency_weights(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    masks = binary_folder(tmp_path)
    data = zoo.build_dataset("folder", root=tmp_path, split=None, mask_values={255: 1})
    stats = class_stats(data, 2)
    fg = sum(int((m == 255).sum()) for m in masks)
    total = sum(m.size for m in masks)
    assert stats.pixels.tolist() == [total - fg, fg] and stats.images.tolist() == [3, 3]
    freq = np.array([(total - fg) / total, fg / total])
    np.testing.assert_allclose(stats.median_frequency_weights(), np.median(freq) / freq)
    argv = ["data", "stats", "--dataset", "folder", "--root", str(tmp_path), "--split", "none", "--mask-values",
            "255:1"]  # fmt: skip
    assert main(argv) == 2  # no split named "none"
    capsys.readouterr()


def folder_config(tmp_path: Path, root: Path, **dataset_kwargs) -> Path:
    """A zoo train config on the folder dataset at ``root`` (split None: every image), a tiny model."""
    net = {"encoder": "xception65", "decoder": "fcn", "encoder_kwargs": {"width": 0.125}}
    config = {
        "trainer": {"accelerator": "cpu", "max_steps": 1, "logger": False, "enable_progress_bar": False},
        "model": {"net": net},
        "data": {"dataset": "folder", "root": str(root), "train_split": None, "val_split": None, "crop_size": 16,
                 "batch_size": 2, "num_workers": 0, "dataset_kwargs": dataset_kwargs},
    }  # fmt: skip
    path = tmp_path / "binary.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow  # a fresh interpreter
def test_training_on_0_255_binary_masks_is_refused_before_the_first_step(tmp_path: Path) -> None:
    """The user's step in a real process: zoo train fit on 0/255 masks exits 2 with the mask_values fix."""
    binary_folder(tmp_path / "data")
    config = folder_config(tmp_path, tmp_path / "data")
    argv = [sys.executable, "-m", "zoo", "train", "fit", "--config", str(config)]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=300, env=ENV)
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("zoo train: error: folder split None: class 'foreground' never occurs")
    assert "mask_values {255: 1}" in last
    assert not list(tmp_path.rglob("*.ckpt"))


def test_jpeg_masks_are_refused_with_save_as_png(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    masks = binary_folder(tmp_path / "data")
    for i, mask in enumerate(masks):
        (tmp_path / "data" / "masks" / f"im{i}.png").unlink()
        Image.fromarray((mask > 0).astype(np.uint8)).save(tmp_path / "data" / "masks" / f"im{i}.jpg", quality=75)
    config = folder_config(tmp_path, tmp_path / "data", seg_map_suffix=".jpg")
    assert main(["train", "fit", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.endswith("is a JPEG: its lossy compression turns pixels along "
                                                       "edges into other class ids; save masks as PNG")  # fmt: skip
    assert main(["data", "check", "--dataset", "folder", "--root", str(tmp_path / "data"), "--seg-map-suffix", ".jpg"])
    assert "save masks as PNG" in capsys.readouterr().out


def test_data_check_takes_the_layout_options_of_training(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "data"
    binary_folder(root)
    (root / "masks").rename(root / "labels")
    for path in (root / "labels").iterdir():
        path.rename(path.with_name(path.stem + "_mask.png"))
    args = ["data", "check", "--dataset", "folder", "--root", str(root), "--mask-values", "255:1"]
    assert main([*args, "--ann-dir", "labels", "--seg-map-suffix", "_mask.png"]) == 0
    assert "ok" in capsys.readouterr().out
    assert main(args) == 1  # the default layout finds no masks


def test_voc_colour_masks_map_the_boundary_colour_to_ignore(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A VOC colour mask (as SegmentationClass PNGs look in RGB): class colours plus the cream boundary."""
    palette = voc_palette(21)
    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[1:5, 1:5] = palette[15]  # person
    rgb[0, :] = (224, 224, 192)  # the boundary colour
    (tmp_path / "colour").mkdir()
    Image.fromarray(rgb).save(tmp_path / "colour" / "2007_000032.png")
    args = ["data", "convert-colour-masks", "--input", str(tmp_path / "colour"), "--output", str(tmp_path / "index")]
    assert main([*args, "--palette", "voc"]) == 0
    index = read_mask(tmp_path / "index" / "2007_000032.png")
    assert (index[0] == 255).all() and (index[1:5, 1:5] == 15).all() and index[5, 5] == 0
