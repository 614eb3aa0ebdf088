"""zoo eval (DeepLab evaluation protocol) and the plots."""

from __future__ import annotations

import json
from pathlib import Path

import helpers
import numpy as np
import pytest
import torch
from PIL import Image

from zoo import build_dataset, build_model, save_model
from zoo.cli import main
from zoo.data.io import voc_palette
from zoo.data.shapes import write_shapes
from zoo.infer.predictor import Predictor, deeplab_eval_crop
from zoo.infer.tta import pad_to_size
from zoo.viz import TITLE_HEIGHT, enlarged, overlay, plot_class_iou, plot_confusion_matrix


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = write_shapes(tmp_path_factory.mktemp("shapes"), num_train=1, num_val=2, size=48)
    num_classes = build_dataset("voc", root=root, split="val").num_classes
    torch.manual_seed(0)
    model = helpers.tiny_model(num_classes=num_classes)
    with torch.no_grad():
        for module in model.decoder.modules():
            if isinstance(module, torch.nn.Conv2d) and module.out_channels == num_classes:
                module.weight.mul_(1e4)  # logits far from ties (random init gives ~1e-5)
    return root, save_model(model, root / "tiny.pt")


def reference_miou(predictor: Predictor, root: Path) -> float:
    """mIoU from a confusion matrix counted with numpy (255 ignored, classes absent everywhere left out)."""
    dataset = build_dataset("voc", root=root, split="val")
    c = dataset.num_classes
    cm = np.zeros((c, c), np.int64)
    for item in (dataset[i] for i in range(len(dataset))):
        pred, mask = predictor.predict(item["image"]).astype(np.int64), item["mask"].astype(np.int64)
        keep = mask != 255
        np.add.at(cm, (mask[keep], pred[keep]), 1)
    union = cm.sum(0) + cm.sum(1) - np.diag(cm)
    return float((np.diag(cm)[union > 0] / union[union > 0]).mean())


def test_eval_prints_miou_and_writes_plots(
    data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, checkpoint = data
    code = main(["eval", "--checkpoint", str(checkpoint), "--dataset", "voc", "--root", str(root), "--split", "val",
                 "--output", str(tmp_path / "eval")])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    expected = reference_miou(Predictor.from_checkpoint(checkpoint), root)
    assert metrics["miou"] == pytest.approx(expected, abs=1e-6)
    assert f"mIoU {expected:.4f}" in out and "background" in out
    assert np.array(metrics["confusion_matrix"]).sum() > 0
    for name in ("confusion_matrix.png", "class_iou.png"):
        with Image.open(tmp_path / "eval" / name) as image:
            assert image.size[0] > 100 and image.size[1] > 100


def test_eval_metric_set_show_dir_and_no_overwrite(
    data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, checkpoint = data
    argv = ["eval", "--checkpoint", str(checkpoint), "--dataset", "voc", "--root", str(root), "--split", "val",
            "--output", str(tmp_path / "eval"), "--show-dir", str(tmp_path / "show")]  # fmt: skip
    assert main(argv) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    cm = np.array(metrics["confusion_matrix"], dtype=np.float64)
    tp, truth, predicted = np.diag(cm), cm.sum(1), cm.sum(0)
    present = truth > 0
    assert metrics["aacc"] == pytest.approx(tp.sum() / cm.sum())
    assert metrics["macc"] == pytest.approx((tp[present] / truth[present]).mean())
    union = (truth + predicted) > 0
    assert metrics["mdice"] == pytest.approx((2 * tp[union] / (truth + predicted)[union]).mean())
    names = sorted(p.name for p in (tmp_path / "show" / "pred").iterdir())
    assert names == ["shapes_val_00000.png", "shapes_val_00001.png"]
    vis = np.array(Image.open(tmp_path / "show" / "vis" / names[0]))
    item = build_dataset("voc", root=root, split="val")[0]
    prediction = np.array(Image.open(tmp_path / "show" / "pred" / names[0]))
    predictor = Predictor.from_checkpoint(checkpoint)
    palette = predictor.palette or voc_palette(predictor.num_classes)
    scale, top = 6, TITLE_HEIGHT  # 48 px panels drawn 6x (at least 256 px tall), under a title band each
    assert vis.shape[1] == 3 * 48 * scale and vis.shape[0] > top + 48 * scale  # ... above a legend
    panels_drawn = [vis[top : top + 48 * scale, i * 48 * scale : (i + 1) * 48 * scale] for i in range(3)]
    image = enlarged(item["image"], 256)
    expected = [
        image,
        overlay(image, enlarged(item["mask"], 256), palette),
        overlay(image, enlarged(prediction, 256), palette),
    ]
    for drawn, want in zip(panels_drawn, expected, strict=True):  # image | truth | prediction, as the demo's
        np.testing.assert_array_equal(drawn, want)
    assert (vis[:top] < 128).any() and (vis[:top] == 255).mean() > 0.8  # the titles: dark text on white
    capsys.readouterr()
    assert main(argv) == 2  # the results are there already
    assert "metrics.json exists; pass --force" in capsys.readouterr().err
    assert main([*argv, "--force"]) == 0


@pytest.mark.slow
def test_eval_with_tta_and_slide(data: tuple[Path, Path], tmp_path: Path) -> None:
    root, checkpoint = data
    tta = ["--scales", "0.75", "1", "--flip", "--crop", "32", "32", "--stride", "16", "16"]
    code = main(["eval", "--checkpoint", str(checkpoint), "--dataset", "voc", "--root", str(root), "--output",
                 str(tmp_path / "eval"), *tta])  # fmt: skip
    assert code == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["scales"] == [0.75, 1.0] and metrics["flip"] and metrics["slide"] == [[32, 32], [16, 16]]
    options = {"scales": (0.75, 1.0), "flip": True, "slide": ((32, 32), (16, 16))}
    assert metrics["miou"] == pytest.approx(reference_miou(Predictor.from_checkpoint(checkpoint, **options), root))


def test_eval_class_count_mismatch(tmp_path: Path, data: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = data
    other = save_model(build_model("resnet18", "fcn", num_classes=2), tmp_path / "two.pt")
    code = main(["eval", "--checkpoint", str(other), "--dataset", "voc", "--root", str(root), "--output",
                 str(tmp_path / "eval")])  # fmt: skip
    assert code == 2
    assert "the dataset has 5 classes, the checkpoint predicts 2" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tf_model() -> torch.nn.Module:
    """A tiny model with TF DeepLab's semantics and random weights and statistics, in eval mode."""
    model = helpers.tiny_model(semantics="deeplab-tf")
    model.load_state_dict(helpers.randomise(model.state_dict()))
    return model.eval()


@pytest.mark.parametrize("flip", [False, True])
def test_padding_equals_deeplab_pad_then_crop(tf_model: torch.nn.Module, flip: bool) -> None:
    # DeepLab's eval: the float image padded at the bottom/right with the mean pixel (127.5), the padded image
    # (and its mirror) through the model, the logits of the image's own pixels kept.
    image = np.random.default_rng(0).integers(0, 256, (37, 45, 3), dtype=np.uint8)
    padded = np.full((65, 81, 3), 127.5, np.float32)
    padded[:37, :45] = image
    x = torch.from_numpy(padded).permute(2, 0, 1)[None] / 255
    with torch.no_grad():
        expected = tf_model(x)
        if flip:
            expected = (expected + tf_model(x.flip(-1)).flip(-1)) / 2
        unpadded = tf_model(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255)
    expected = expected[..., :37, :45]
    predictor = Predictor(tf_model, num_classes=3, flip=flip, pad_to=(65, 81))
    got = predictor.logits([image])
    assert got.shape == (1, 3, 37, 45)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert helpers.max_rel_diff(unpadded, expected) > 1e-2  # the padding matters with align_corners resizes


def test_pad_to_size_pads_only_short_sides() -> None:
    x = torch.rand(2, 3, 5, 9)
    out = pad_to_size(x, (7, 4), (0.1, 0.2, 0.3))
    assert out.shape == (2, 3, 7, 9)
    assert torch.equal(out[..., :5, :], x)
    assert torch.equal(out[:, :, 5:, :], torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1).expand(2, 3, 2, 9))
    assert pad_to_size(x, (5, 9), (0.0, 0.0, 0.0)) is x
    with pytest.raises(ValueError, match="one number per channel"):
        pad_to_size(x, (8, 9), (0.5,))
    with pytest.raises(ValueError, match="^pad_value: needed with pad_to"):
        Predictor(lambda t: t, num_classes=3, pad_to=(8, 8))


def test_deeplab_eval_crop_follows_semantics_and_dataset(tmp_path: Path, tf_model: torch.nn.Module) -> None:
    tf_file = save_model(tf_model, tmp_path / "tf.pt")
    zoo_file = save_model(helpers.tiny_model(), tmp_path / "zoo.pt")
    assert deeplab_eval_crop(tf_model.build_args, "voc") == (513, 513)
    assert deeplab_eval_crop(tf_model.build_args, "cityscapes") == (1025, 2049)
    assert deeplab_eval_crop(tf_model.build_args, "shapes") is None
    assert Predictor.from_checkpoint(tf_file, pad_to="voc").pad_to == (513, 513)
    assert Predictor.from_checkpoint(tf_file, pad_to="voc").pad_value == (0.5, 0.5, 0.5)
    assert Predictor.from_checkpoint(tf_file, pad_to=(64, 80)).pad_to == (64, 80)
    assert Predictor.from_checkpoint(zoo_file, pad_to="voc").pad_to is None
    assert Predictor.from_checkpoint(zoo_file, pad_to=(64, 80)).pad_value == tuple(helpers.tiny_model().mean)


@pytest.mark.parametrize(
    ("flags", "pad_to"), [([], [513, 513]), (["--pad-to", "64", "80"], [64, 80]), (["--no-pad"], None)]
)
def test_eval_pads_a_converted_model_as_deeplab_does(
    data: tuple[Path, Path], tmp_path: Path, flags: list[str], pad_to: list[int] | None
) -> None:
    root, _ = data
    num_classes = build_dataset("voc", root=root, split="val").num_classes
    model = helpers.tiny_model(num_classes=num_classes, semantics="deeplab-tf")
    model.load_state_dict(helpers.randomise(model.state_dict()))
    checkpoint = save_model(model, tmp_path / "tf.pt")
    code = main(["eval", "--checkpoint", str(checkpoint), "--dataset", "voc", "--root", str(root), "--output",
                 str(tmp_path / "eval"), *flags])  # fmt: skip
    assert code == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["pad_to"] == pad_to
    expected = reference_miou(Predictor.from_checkpoint(checkpoint, pad_to=tuple(pad_to) if pad_to else None), root)
    assert metrics["miou"] == pytest.approx(expected, abs=1e-6)


def test_plots_check_their_input(tmp_path: Path) -> None:
    cm = np.array([[5, 1], [0, 3]])
    assert plot_confusion_matrix(cm, ["a", "b"], tmp_path / "cm.png").is_file()
    assert plot_class_iou(np.array([0.5, np.nan]), ["a", "b"], tmp_path / "iou.png").is_file()
    with pytest.raises(ValueError, match="cm has 2 classes but class_names has 3 entries"):
        plot_confusion_matrix(cm, ["a", "b", "c"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="square"):
        plot_confusion_matrix(np.zeros((2, 3)), ["a", "b"], tmp_path / "x.png")


def test_overlay() -> None:
    image = np.full((2, 3, 3), 100, np.uint8)
    mask = np.array([[0, 1, 255], [1, 0, 2]], np.uint8)
    palette = [(0, 0, 0), (200, 0, 0)]
    np.testing.assert_array_equal(overlay(image, mask, palette, 0.0), image)
    full = overlay(image, mask, palette, 1.0)
    assert tuple(full[0, 1]) == (200, 0, 0) and tuple(full[0, 0]) == (100, 100, 100)  # black class: unchanged
    assert tuple(full[0, 2]) == (100, 100, 100) and tuple(full[1, 2]) == (100, 100, 100)  # no colour: unchanged
    assert tuple(overlay(image, mask, palette, 0.5)[0, 1]) == (150, 50, 50)
    with pytest.raises(ValueError, match="opacity"):
        overlay(image, mask, palette, 1.5)
