"""Training: metrics, a fast_dev_run on shapes, checkpoint contents, resuming, and DDP on the CPU."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import yaml
from PIL import Image
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger

from zoo.checkpoint import load_model
from zoo.cli import main
from zoo.cli.train import cli_main
from zoo.metrics import confusion_matrix_metric, scores_from_confusion
from zoo.train import SegmentationDataModule, SegmentationModule
from zoo.train.overlays import ValidationOverlays
from zoo.train.run import _tensorboard_without_tensorflow
from zoo.viz import MIN_PANEL_HEIGHT, overlay

TINY_MODEL = dict(net={"encoder": "xception65", "decoder": "deeplabv3plus", "encoder_kwargs": {"width": 0.125}})


def tiny_data(**kwargs) -> SegmentationDataModule:
    args = dict(
        dataset="shapes",
        crop_size=48,
        batch_size=2,
        val_batch_size=2,
        num_workers=0,
        dataset_kwargs={"size": 48, "num_images": 4},
    )
    return SegmentationDataModule(**{**args, **kwargs})


def tiny_module(data: SegmentationDataModule, **kwargs) -> SegmentationModule:
    args = dict(num_classes=data.num_classes, class_names=data.class_names, palette=data.palette, **TINY_MODEL)
    return SegmentationModule(**{**args, **kwargs})


def tiny_trainer(tmp_path, **kwargs) -> pl.Trainer:
    args = dict(
        accelerator="cpu",
        devices=1,
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    return pl.Trainer(**{**args, **kwargs})


# ---------------------------------------------------------------- metrics
def test_miou_matches_hand_computed_confusion_matrix():
    # 4 classes; class 3 appears in neither target nor prediction; 255 pixels are ignored.
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 255]])
    preds = torch.tensor([[0, 1, 1, 1], [2, 0, 3, 2]])  # prediction under an ignore pixel does not count
    metric = confusion_matrix_metric(num_classes=4)
    metric.update(preds[:1], target[:1])  # two updates: the matrix accumulates over batches
    metric.update(preds[1:], target[1:])
    cm = metric.compute()
    expected = torch.tensor([[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
    assert torch.equal(cm.cpu(), expected)

    scores = scores_from_confusion(cm)
    # IoU = TP / (TP + FP + FN): class 0: 1/(1+1+1), class 1: 2/(2+1+0), class 2: 1/(1+0+1), class 3: absent.
    iou = scores.iou.tolist()
    assert iou[:3] == pytest.approx([1 / 3, 2 / 3, 1 / 2])
    assert math.isnan(iou[3])
    assert scores.miou == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert scores.pixel_accuracy == pytest.approx(4 / 6)


def test_class_only_in_prediction_counts_with_iou_zero():
    cm = torch.tensor([[3, 1], [0, 0]])  # class 1 never in the ground truth but predicted once
    scores = scores_from_confusion(cm)
    assert scores.iou.tolist() == pytest.approx([0.75, 0.0])
    assert scores.miou == pytest.approx(0.375)


def test_scores_reject_non_square_matrix():
    with pytest.raises(ValueError, match="square"):
        scores_from_confusion(torch.zeros(2, 3))


# ----------------------------------------------------------- module / data
def test_module_rejects_mismatched_class_lists():
    with pytest.raises(ValueError, match="class_weights has 2 entries, expected num_classes=5"):
        SegmentationModule(num_classes=5, class_weights=[1.0, 2.0], **TINY_MODEL)


def test_datamodule_rejects_unknown_dataset():
    with pytest.raises(KeyError, match="unknown dataset 'nope'"):
        SegmentationDataModule(dataset="nope")


def test_datamodule_knows_shapes_classes():
    data = tiny_data()
    assert data.num_classes == 5
    assert data.class_names[0] == "background"
    assert len(data.palette) == 5


def test_datamodule_reads_classes_of_a_voc_layout_root(tmp_path):
    from zoo.data.shapes import SHAPES_CLASSES, write_shapes

    root = write_shapes(tmp_path / "shapes", num_train=2, num_val=2, size=40)
    data = SegmentationDataModule(dataset="voc", root=str(root))
    assert data.class_names == list(SHAPES_CLASSES) and data.num_classes == 5  # from root/classes.txt


def test_prepare_data_writes_missing_shapes(tmp_path):
    root = tmp_path / "shapes"
    data = tiny_data(
        dataset="shapes-voc",
        root=str(root),
        dataset_kwargs=None,
        prepare={"num_train": 2, "num_val": 2, "size": 40},
    )
    assert data.num_classes == 5 and not root.exists()  # known before the files exist (for link_arguments)
    data.prepare_data()
    assert (root / "ImageSets" / "Segmentation" / "train.txt").read_text().split() == [
        "shapes_train_00000",
        "shapes_train_00001",
    ]
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert batch["image"].shape == (2, 3, 48, 48) and batch["mask"].dtype == torch.long


def first_batches(seed: int, num_workers: int, count: int = 4) -> list[torch.Tensor]:
    pl.seed_everything(seed, workers=True)
    data = tiny_data(num_workers=num_workers, batch_size=1)
    data.setup("fit")
    batches = []
    for batch in data.train_dataloader():
        batches.append(batch["image"])
        if len(batches) == count:
            break
    return batches


def test_augmentation_is_reproducible_from_the_global_seed_with_workers():
    a, b, c = first_batches(0, num_workers=2), first_batches(0, num_workers=2), first_batches(1, num_workers=2)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_fast_dev_run_on_shapes(tmp_path):
    pl.seed_everything(0, workers=True)
    data = tiny_data()
    module = tiny_module(data, net={**TINY_MODEL["net"], "aux_head": True})
    trainer = tiny_trainer(tmp_path, fast_dev_run=True)
    trainer.fit(module, datamodule=data)
    assert trainer.state.finished
    assert trainer.global_step == 1
    loss = trainer.callback_metrics["train_loss"]
    assert torch.isfinite(loss)
    assert 0.0 <= float(trainer.callback_metrics["val_miou"]) <= 1.0
    assert data.datasets["train"].transform is not None
    assert module.val_scores is not None and module.val_scores.confusion.sum() > 0


def test_validation_overlays_draw_the_first_batchs_predictions_for_tensorboard(tmp_path, monkeypatch):
    pl.seed_everything(0, workers=True)
    data = tiny_data()
    module = tiny_module(data)
    _tensorboard_without_tensorflow()  # as build_run: TensorBoard's writer without importing TensorFlow
    logger, drawn = TensorBoardLogger(tmp_path), []
    monkeypatch.setattr(logger.experiment, "add_images", lambda tag, images, step, dataformats: drawn.append(
        (tag, images, step, dataformats)))  # fmt: skip
    trainer = tiny_trainer(tmp_path, logger=logger, max_steps=1, val_check_interval=1, limit_val_batches=2,
                           callbacks=[ValidationOverlays(num_images=1)])  # fmt: skip
    trainer.fit(module, datamodule=data)
    [(tag, images, step, dataformats)] = drawn  # one validation, batch 0 only
    assert dataformats == "NHWC"
    assert tag == "val_overlays" and step == 1 and images.shape == (1, 48, 48, 3) and images.dtype == np.uint8
    data.setup("validate")
    image = data.datasets["val"][0]["image"]
    with torch.no_grad():
        pred = module.model.eval()(image[None]).argmax(1)[0].to(torch.uint8).numpy()
    rgb = (image.clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(images[0], overlay(rgb, pred, module.palette))
    with pytest.raises(ValueError, match="val_overlays.num_images must be 0 or more, got -1"):
        ValidationOverlays(num_images=-1)


def test_deeplab_tf_semantics_from_the_cli_and_a_training_step(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
    cli = cli_main(["--config", str(config), "--model.net.semantics", "deeplab-tf"], run=False)
    model = cli.model.model
    assert model.semantics == "deeplab-tf" and model.build_args["semantics"] == "deeplab-tf"
    assert model.decoder.align_corners and any(getattr(m, "raw_tap", False) for m in model.encoder.modules())
    pl.seed_everything(0)
    data = tiny_data()
    module = tiny_module(data, net={**TINY_MODEL["net"], "semantics": "deeplab-tf"})
    before = [p.detach().clone() for p in module.model.parameters()]
    trainer = tiny_trainer(tmp_path, max_steps=1, limit_val_batches=0)
    trainer.fit(module, datamodule=data)
    assert trainer.global_step == 1 and torch.isfinite(trainer.callback_metrics["train_loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, module.model.parameters(), strict=True))
    trainer.save_checkpoint(tmp_path / "tf.ckpt")
    assert load_model(tmp_path / "tf.ckpt").semantics == "deeplab-tf"


def test_checkpoint_stores_zoo_meta(tmp_path):
    pl.seed_everything(0)
    data = tiny_data()
    module = tiny_module(data, optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3))
    trainer = tiny_trainer(tmp_path, max_steps=1, limit_val_batches=0)
    trainer.fit(module, datamodule=data)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    meta = checkpoint["zoo"]
    assert set(meta) == {"build_args", "class_names", "palette", "mean", "std"}
    assert meta["build_args"] == module.model.build_args
    assert meta["class_names"] == data.class_names
    assert meta["palette"] == [list(c) for c in data.palette]
    assert meta["mean"] == list(module.model.mean) and meta["std"] == list(module.model.std)
    model_keys = {k for k in checkpoint["state_dict"] if k.startswith("model.")}
    assert model_keys == {f"model.{k}" for k in module.model.state_dict()}
    # zoo.models.load_model rebuilds the same network from the Lightning checkpoint
    from zoo.checkpoint import load_model

    loaded = load_model(path)
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        assert torch.allclose(loaded(x), module.model.eval()(x), atol=1e-5)
    assert loaded.class_names == data.class_names


class RecordLR(Callback):
    """Records (global_step, lr) before every optimizer step."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen.append((trainer.global_step, trainer.optimizers[0].param_groups[0]["lr"]))


def test_resume_continues_global_step_and_poly_lr(tmp_path):
    lr, total = 0.01, 6

    def run(folder, ckpt_path=None, **trainer_kwargs):
        pl.seed_everything(0)
        data = tiny_data(dataset_kwargs={"size": 48, "num_images": 8})
        module = tiny_module(data, optimizer=lambda p, lr=lr: torch.optim.SGD(p, lr=lr, momentum=0.9))
        record = RecordLR()
        trainer = tiny_trainer(folder, max_steps=total, limit_val_batches=0, **trainer_kwargs)
        trainer.callbacks.append(record)
        trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
        return trainer, record.seen

    straight, seen_straight = run(tmp_path / "straight")
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1, monitor=None)
    run(tmp_path / "first", callbacks=[saver])
    ckpt = tmp_path / "ckpt" / "epoch=0-step=3.ckpt"
    assert ckpt.is_file(), sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    resumed, seen_resumed = run(tmp_path / "resumed", ckpt_path=ckpt)

    expected = [(step, lr * (1 - step / total) ** 0.9) for step in range(total)]
    assert [s for s, _ in seen_straight] == list(range(total))
    assert [v for _, v in seen_straight] == pytest.approx([v for _, v in expected])
    assert [s for s, _ in seen_resumed] == [3, 4, 5]  # the resumed run starts at step 3, not 0
    assert [v for _, v in seen_resumed] == pytest.approx([v for _, v in expected[3:]])
    assert resumed.global_step == straight.global_step == total
    final = [t.optimizers[0].param_groups[0]["lr"] for t in (straight, resumed)]
    assert final[0] == pytest.approx(final[1]) and final[0] == pytest.approx(0.0)


# ---------------------------------------------------------------------- DDP
DDP_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import pytorch_lightning as pl
    from zoo.train import SegmentationDataModule, SegmentationModule

    devices, out = int(sys.argv[1]), sys.argv[2]
    pl.seed_everything(0)
    data = SegmentationDataModule(dataset="shapes", crop_size=48, val_batch_size=1, num_workers=0,
                                  dataset_kwargs={"size": 48, "num_images": 6})
    module = SegmentationModule(net={"encoder": "xception65", "decoder": "deeplabv3plus",
                                     "encoder_kwargs": {"width": 0.125}},
                                num_classes=data.num_classes, class_names=data.class_names)
    trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
                         logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=out + "_root")
    trainer.validate(module, datamodule=data)
    if trainer.is_global_zero:
        scores = module.val_scores
        json.dump({"world_size": trainer.world_size, "miou": scores.miou,
                   "confusion": scores.confusion.tolist()}, open(out, "w"))
    """
)


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_one_process(tmp_path):
    """Lightning's ``ddp`` strategy (gloo on the CPU) re-launches the running script for the second rank,
    so the run is a standalone script started with subprocess rather than pytest itself."""
    script = tmp_path / "validate.py"
    script.write_text(DDP_SCRIPT)
    results = {}
    for devices in (1, 2):
        out = tmp_path / f"result{devices}.json"
        proc = subprocess.run(
            [sys.executable, str(script), str(devices), str(out)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[devices] = json.loads(out.read_text())
    assert results[1]["world_size"] == 1 and results[2]["world_size"] == 2
    from zoo.data.shapes import ShapesDataset

    labelled = sum(int((item["mask"] != 255).sum()) for item in ShapesDataset(split="val", size=48, num_images=6))
    assert np.asarray(results[1]["confusion"]).sum() == labelled
    assert results[2]["confusion"] == results[1]["confusion"]  # one matrix over the whole split, summed over ranks
    assert results[2]["miou"] == pytest.approx(results[1]["miou"])


# --------------------------------------------------------------------- demo
@pytest.mark.slow
def test_demo_writes_shapes_trains_and_draws_overlays(tmp_path, monkeypatch, capsys):
    """The demo end to end on a shrunken quickstart config: files in VOC layout, training, overlays."""
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml").read_text())
    config["trainer"].update(val_check_interval=2)
    config["model"]["net"]["encoder_kwargs"] = {"width": 0.125}
    config["data"].update(crop_size=48, batch_size=2, val_batch_size=2)
    config["data"]["prepare"] = {"num_train": 4, "num_val": 2, "seed": 0, "size": 48}
    path = tmp_path / "quickstart.yaml"  # runs are named after the config file
    path.write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)

    argv = ["demo", "--config", str(path), "--output", "overlays", "--num-overlays", "2", "--trainer.max_steps", "2"]
    assert main(argv) == 0  # a zoo train fit override passes through
    printed = capsys.readouterr()
    assert "step 2/2 (100%)" in printed.err  # progress lines when the output is not a terminal
    root = Path(config["data"]["root"])
    assert (root / "ImageSets" / "Segmentation" / "val.txt").read_text().split() == [
        "shapes_val_00000",
        "shapes_val_00001",
    ]
    strips = sorted(Path("overlays").glob("*.png"))
    assert [p.name for p in strips] == ["shapes_val_00000.png", "shapes_val_00001.png"]
    strip = np.asarray(Image.open(strips[0]))
    side = 48 * -(-MIN_PANEL_HEIGHT // 48)  # 48-px images enlarged by a whole factor to at least MIN_PANEL_HEIGHT
    assert strip.shape[0] > side and strip.shape[1:] == (3 * side, 3)  # image | truth | prediction above a legend
    last = printed.out.strip().splitlines()[-1]
    assert last.startswith("demo: validation mIoU ") and "overlays" in last
    miou = float(last.split()[3])
    assert 0.0 <= miou <= 1.0
    assert list(Path("runs/quickstart").glob("version_0/checkpoints/*.ckpt"))


@pytest.mark.slow
def test_demo_in_a_real_process_prints_no_noise_and_progress_lines(tmp_path):
    """zoo demo, output to a pipe: no TensorFlow/absl/CUDA_HOME lines or Lightning tips, progress with an ETA."""
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml").read_text())
    config["trainer"].update(val_check_interval=2, log_every_n_steps=1)
    config["model"]["net"]["encoder_kwargs"] = {"width": 0.125}
    config["data"].update(crop_size=48, batch_size=2, val_batch_size=2)
    config["data"]["prepare"] = {"num_train": 4, "num_val": 2, "seed": 0, "size": 48}
    (tmp_path / "quickstart.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    argv = [sys.executable, "-m", "zoo", "demo", "--config", "quickstart.yaml", "--num-overlays", "1",
            "--trainer.max_steps", "4"]  # fmt: skip
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    noises = ("oneDNN", "absl", "CUDA_HOME", "Tip:", "GPU available", "TPU available", "tensorflow", "Seed set",
              "LightningCLI's args", "LeafSpec")  # fmt: skip
    for noise in noises:
        assert noise not in done.stderr + done.stdout, noise
    progress = [line for line in done.stderr.splitlines() if line.startswith("step ")]
    assert done.stderr.splitlines()[0].startswith("step "), done.stderr[:2000]  # the first line is progress
    assert progress[-1].startswith("step 4/4 (100%)") and "s/step | ETA " in progress[-1]
    assert done.stdout.strip().splitlines()[-1].startswith("demo: validation mIoU ")
