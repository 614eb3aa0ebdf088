"""``zoo data make-shapes`` and ``zoo data check``, run in-process."""

from __future__ import annotations

import numpy as np
from PIL import Image

from zoo.cli import main
from zoo.data.io import read_mask, voc_colormap


def test_make_shapes_then_check(tmp_path, capsys):
    root = tmp_path / "shapes"
    assert main(["data", "make-shapes", "--root", str(root), "--num-train", "3", "--num-val", "2", "--seed", "4"]) == 0
    assert sorted(p.stem for p in (root / "JPEGImages").glob("*.jpg")) == [
        "shapes_train_00000", "shapes_train_00001", "shapes_train_00002", "shapes_val_00000", "shapes_val_00001",
    ]  # fmt: skip
    assert (root / "ImageSets" / "Segmentation" / "val.txt").read_text().split() == [
        "shapes_val_00000", "shapes_val_00001",
    ]  # fmt: skip
    capsys.readouterr()
    assert main(["data", "check", "--dataset", "voc", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 3}
    rows.pop("", None)  # continuation lines of wrapped cells
    assert set(rows) == {"train", "val", "trainval"}
    assert [c.strip() for c in rows["trainval"].split("│")[2:4]] == ["5", "0"]
    assert out.rstrip().endswith("ok")


def test_check_reports_every_bad_file(tmp_path, capsys):
    root = tmp_path / "shapes"
    main(["data", "make-shapes", "--root", str(root), "--num-train", "3", "--num-val", "1"])
    masks = root / "SegmentationClass"
    mask = read_mask(masks / "shapes_train_00001.png")
    Image.fromarray(voc_colormap()[mask]).save(masks / "shapes_train_00001.png")  # colour mask
    Image.fromarray(np.zeros((5, 5), np.uint8), mode="L").save(masks / "shapes_train_00002.png")  # wrong size
    (masks / "shapes_val_00000.png").unlink()
    capsys.readouterr()
    assert main(["data", "check", "--dataset", "voc", "--root", str(root), "--split", "train", "--split", "val"]) == 1
    out = capsys.readouterr().out.replace("\n", "")
    assert f"train: mask {masks / 'shapes_train_00001.png'}: colour (RGB) mask" in out
    assert f"but mask {masks / 'shapes_train_00002.png'} is 5x5" in out
    assert f"val: mask file not found: {masks / 'shapes_val_00000.png'}" in out
    assert "3 problem(s) found" in out


def test_check_bad_arguments(tmp_path, capsys):
    assert main(["data", "check", "--dataset", "voc", "--root", str(tmp_path / "missing")]) == 1
    assert f"--root: folder not found: {tmp_path / 'missing'}" in capsys.readouterr().out.replace("\n", "")
    assert main(["data", "check", "--dataset", "imagenet", "--root", str(tmp_path)]) == 2
    assert "unknown dataset 'imagenet'" in capsys.readouterr().err
    assert main(["data", "check", "--dataset", "cityscapes", "--root", str(tmp_path)]) == 1
    assert "cityscapes: no splits found under" in capsys.readouterr().out
