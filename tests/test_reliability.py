"""Faults and user data: bad checkpoint files, data roots that are not ours, NaN, full and read-only disks,
interval checkpoints, one run folder; kill -9, SIGTERM and SIGINT of a real ``train.py fit`` and its resume."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import yaml
from PIL import Image
from pytorch_lightning.callbacks import Callback

import zoo
from zoo.checkpoint import save_model
from zoo.cli import main
from zoo.data.shapes import MARKER, write_shapes
from zoo.train import SegmentationDataModule, SegmentationModule
from zoo.train.checkpointing import LastCheckpoint, ValidateAtEnd, ZooCheckpointIO

REPO = Path(__file__).resolve().parents[1]
TINY = {"encoder": "xception65", "decoder": "deeplabv3plus", "encoder_kwargs": {"width": 0.125}}


# ------------------------------------------------------------------ fixtures
def voc_tree(root: Path, num_train: int = 4, num_val: int = 2) -> Path:
    """A small VOC-layout tree that the zoo did not write (no marker): a stand-in for a user's dataset."""
    write_shapes(root, num_train=num_train, num_val=num_val, size=48)
    (root / MARKER).unlink()
    return root


def tree_hashes(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` (names relative to it)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def tiny_config(tmp_path: Path, root: Path, **trainer: object) -> Path:
    config = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "max_steps": 2,
            "val_check_interval": 2,
            "check_val_every_n_epoch": None,
            "log_every_n_steps": 1,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "num_sanity_val_steps": 0,
            **trainer,
        },
        "last_checkpoint": {"every_n_train_steps": 2},
        "model": {"net": TINY, "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-3}}},
        "data": {
            "dataset": "voc",
            "root": str(root),
            "crop_size": 48,
            "batch_size": 2,
            "val_batch_size": 2,
            "num_workers": 0,
        },  # fmt: skip
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = zoo.build_model(num_classes=5, **TINY)
    return save_model(model, tmp_path_factory.mktemp("model") / "model.pt", class_names=list("abcde"))


class Payload:
    """Unpickled with weights_only=False, it creates a folder: proof that a file's code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def bad_file(kind: str, folder: Path, model_file: Path) -> Path:
    """A file that is not a checkpoint (or a crafted one) of the given kind."""
    if kind == "onnx":
        path = folder / "model.onnx"
        path.write_bytes(b"\x08\x08\x12\x07pytorch\x1a\x052.4.0" + bytes(64))
    elif kind == "jpeg":
        path = folder / "photo.jpg"
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    elif kind == "text":
        path = folder / "notes.ckpt"
        path.write_text("not a checkpoint\n")
    elif kind == "empty":
        path = folder / "empty.ckpt"
        path.write_bytes(b"")
    elif kind == "truncated":
        path = folder / "truncated.ckpt"
        path.write_bytes(model_file.read_bytes()[: model_file.stat().st_size // 2])
    else:  # a crafted checkpoint whose unpickling runs code
        path = folder / "crafted.ckpt"
        buffer = io.BytesIO()
        torch.save({"zoo": {}, "state_dict": {"w": Payload(folder / "payload-ran")}}, buffer)
        path.write_bytes(buffer.getvalue())
    return path


BAD_KINDS = ["onnx", "jpeg", "text", "empty", "truncated", "payload"]


# ------------------------------------------------- 1. never write a user's data
def test_make_shapes_refuses_a_users_folder_without_force(tmp_path, capsys):
    root = voc_tree(tmp_path / "VOC")
    before = tree_hashes(root)
    assert main(["data", "make-shapes", "--root", str(root), "--num-train", "2", "--num-val", "1"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"zoo data: error: argument --root: {str(root)!r} is not empty and holds no .zoo-shapes marker (it was not "
        "written by the zoo): not writing the shapes data into it; choose a new or empty folder, or pass --force to "
        "overwrite"
    )
    assert tree_hashes(root) == before
    assert main(["data", "make-shapes", "--root", str(root), "--num-train", "2", "--num-val", "1", "--force"]) == 0
    assert (root / MARKER).is_file() and tree_hashes(root) != before


def test_make_shapes_rewrites_its_own_folder(tmp_path):
    root = tmp_path / "shapes"
    assert main(["data", "make-shapes", "--root", str(root), "--num-train", "2", "--num-val", "1"]) == 0
    assert main(["data", "make-shapes", "--root", str(root), "--num-train", "3", "--num-val", "1"]) == 0
    assert len((root / "ImageSets" / "Segmentation" / "train.txt").read_text().split()) == 3


def test_data_prepare_never_touches_a_users_root(tmp_path):
    root = voc_tree(tmp_path / "VOC")
    before = tree_hashes(root)
    with pytest.raises(ValueError) as error:  # when the module is built: before LightningCLI asks for the classes
        SegmentationDataModule(dataset="shapes-voc", root=str(root), prepare={"num_train": 2})
    assert str(error.value) == (
        f"data.prepare: root: {str(root)!r} holds files the zoo did not write (no .zoo-shapes marker): the shapes "
        "data is written only into a new or empty folder or one the zoo wrote"
    )
    assert tree_hashes(root) == before


@pytest.mark.slow
def test_no_command_changes_a_byte_of_the_data_root(tmp_path, monkeypatch, model_file):
    root = voc_tree(tmp_path / "VOCdevkit" / "VOC2012")
    before = tree_hashes(root)
    monkeypatch.chdir(tmp_path)
    config = tiny_config(tmp_path, root)
    assert main(["train", "fit", "--config", str(config)]) == 0
    last = tmp_path / "runs" / "tiny" / "version_0" / "checkpoints" / "last.ckpt"
    assert main(["train", "validate", "--config", str(config), "--ckpt_path", str(last)]) == 0
    assert main(["data", "check", "--dataset", "voc", "--root", str(root)]) == 0
    out = tmp_path / "out"
    assert main(["eval", "--checkpoint", str(last), "--dataset", "voc", "--root", str(root), "--output", str(out)]) == 0
    images = str(root / "JPEGImages")
    assert main(["predict", "--checkpoint", str(model_file), "--input", images, "--output", str(out)]) == 0
    assert tree_hashes(root) == before  # same files, same bytes, nothing added


# ------------------------------------------ 2. one reader, never a file's code
@pytest.mark.parametrize("kind", BAD_KINDS)
def test_every_command_names_a_bad_checkpoint_in_one_line(kind, tmp_path, capsys, model_file):
    path = bad_file(kind, tmp_path, model_file)
    root = write_shapes(tmp_path / "shapes", num_train=2, num_val=1, size=48)
    image = root / "JPEGImages" / "shapes_val_00000.jpg"
    config = tiny_config(tmp_path, root)
    commands = {
        "predict": ["predict", "--checkpoint", str(path), "--input", str(image), "--output", str(tmp_path / "p")],
        "eval": ["eval", "--checkpoint", str(path), "--dataset", "voc", "--root", str(root), "--output", str(tmp_path)],
        "export": ["export", "--checkpoint", str(path), "--onnx", str(tmp_path / "m.onnx")],
        "fit": ["train", "fit", "--config", str(config), "--ckpt_path", str(path)],
        "validate": ["train", "validate", "--config", str(config), "--ckpt_path", str(path)],
    }
    for name, argv in commands.items():
        capsys.readouterr()
        assert main(argv) == 2, name
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(path) in err, (name, err)
        expected = "holds objects other than tensors" if kind == "payload" else "is not a checkpoint"
        assert expected in err, (name, err)
    with pytest.raises(ValueError, match=str(path.name)):
        zoo.Predictor.from_checkpoint(path)
    assert not (tmp_path / "payload-ran").exists()


def test_the_crafted_payload_is_real(tmp_path, model_file):
    path = bad_file("payload", tmp_path, model_file)
    torch.load(path, weights_only=False)  # what a fallback would do
    assert (tmp_path / "payload-ran").is_dir()


def test_lightning_reads_checkpoints_through_the_zoo_reader(tmp_path, model_file):
    path = bad_file("payload", tmp_path, model_file)
    io_plugin = ZooCheckpointIO()
    with pytest.raises(ValueError, match="weights_only=True only"):
        io_plugin.load_checkpoint(path, weights_only=False)
    with pytest.raises(ValueError, match="holds objects other than tensors"):
        io_plugin.load_checkpoint(path)
    assert not (tmp_path / "payload-ran").exists()


# ------------------------------------- 3, 5, 7. interval, atomic, finite writes
def tiny_data(**kwargs) -> SegmentationDataModule:
    args = dict(dataset="shapes", crop_size=48, batch_size=2, val_batch_size=2, num_workers=0,
                dataset_kwargs={"size": 48, "num_images": 4})  # fmt: skip
    return SegmentationDataModule(**{**args, **kwargs})


class LastStepAtValidation(Callback):
    """Records the step of last.ckpt on disk when each validation starts."""

    def __init__(self, path: Path) -> None:
        self.path, self.seen = path, []

    def on_validation_start(self, trainer, pl_module):
        if not trainer.sanity_checking:
            step = torch.load(self.path, weights_only=True)["global_step"] if self.path.is_file() else None
            self.seen.append((trainer.global_step, step))


def test_last_checkpoint_every_n_steps_before_validation_and_at_the_end(tmp_path):
    pl.seed_everything(0)
    data = tiny_data()
    module = SegmentationModule(
        net=TINY, num_classes=5, optimizer=lambda p: torch.optim.SGD(p, lr=0.0)
    )  # lr 0: the score never improves
    folder = tmp_path / "ckpt"
    record = LastStepAtValidation(folder / "last.ckpt")
    trainer = pl.Trainer(
        accelerator="cpu", max_steps=5, val_check_interval=2, check_val_every_n_epoch=None, logger=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, plugins=[ZooCheckpointIO()],
        callbacks=[LastCheckpoint(every_n_train_steps=2, dirpath=str(folder)), ValidateAtEnd(), record],
    )  # fmt: skip
    trainer.fit(module, datamodule=data)
    assert record.seen == [(2, 2), (4, 4), (5, 4)]  # written before each validation; the end (5) validates too
    assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == 5  # and is saved at the end


def test_a_failed_checkpoint_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io_plugin = ZooCheckpointIO()
    io_plugin.save_checkpoint({"state_dict": {"w": torch.ones(2)}, "zoo": {}}, path)
    good = path.read_bytes()

    def full_disk(obj, f):
        f.write(b"x" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match=rf"no space left to write {path} \(.* MiB free\)"):
        io_plugin.save_checkpoint({"state_dict": {"w": torch.zeros(2)}, "zoo": {}}, path)
    assert path.read_bytes() == good and sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_checkpoints_with_non_finite_weights_are_never_written(tmp_path):
    with pytest.raises(ValueError, match="non-finite weights"):
        ZooCheckpointIO().save_checkpoint({"state_dict": {"w": torch.tensor([1.0, float("nan")])}}, tmp_path / "x")
    assert not list(tmp_path.iterdir())


def test_nan_loss_stops_training_naming_the_step(tmp_path, monkeypatch, capsys):
    root = write_shapes(tmp_path / "shapes", num_train=4, num_val=1, size=48)
    config = tiny_config(tmp_path, root, max_steps=30, val_check_interval=30)
    monkeypatch.chdir(tmp_path)
    argv = [
        "train",
        "fit",
        "--config",
        str(config),
        "--model.optimizer",
        "torch.optim.SGD",
        "--model.optimizer.lr",
        "1e6",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("zoo train: error: ") and len(err.strip().splitlines()) == 1
    assert " step " in err and "no checkpoint written" in err and ("loss is nan" in err or "weights hold NaN" in err)
    for ckpt in (tmp_path / "runs").rglob("*.ckpt"):  # interval checkpoints before the NaN are finite
        state = torch.load(ckpt, weights_only=True)["state_dict"]
        assert all(v.isfinite().all() for v in state.values() if v.is_floating_point()), ckpt


def test_export_and_predict_refuse_non_finite_weights(tmp_path, model_file, capsys):
    checkpoint = torch.load(model_file, weights_only=True)
    next(v for v in checkpoint["state_dict"].values() if v.is_floating_point()).fill_(float("nan"))
    path = tmp_path / "nan.pt"
    torch.save(checkpoint, path)
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(image)
    assert main(["export", "--checkpoint", str(path), "--onnx", str(tmp_path / "m.onnx")]) == 2
    assert "non-finite weights" in capsys.readouterr().err and not (tmp_path / "m.onnx").exists()
    assert main(["predict", "--checkpoint", str(path), "--input", str(image), "--output", str(tmp_path / "o")]) == 2
    assert "non-finite weights" in capsys.readouterr().err


# ------------------------------------------------------ 8. data checked first
def test_a_truncated_image_fails_before_the_first_step(tmp_path):
    root = voc_tree(tmp_path / "VOC", num_train=4, num_val=2)
    bad = root / "JPEGImages" / "shapes_val_00001.jpg"
    bad.write_bytes(bad.read_bytes()[:200])
    data = SegmentationDataModule(dataset="voc", root=str(root), crop_size=48, batch_size=2, num_workers=0)
    with pytest.raises(ValueError, match=rf"split 'val': 1 bad item\(s\): cannot read image {bad}"):
        data.setup("fit")


def test_a_train_split_smaller_than_a_batch_is_an_error(tmp_path):
    root = voc_tree(tmp_path / "VOC", num_train=3, num_val=1)
    data = SegmentationDataModule(dataset="voc", root=str(root), crop_size=48, batch_size=4, num_workers=0)
    with pytest.raises(ValueError, match="train split 'train' has 3 images, fewer than data.batch_size 4"):
        data.setup("fit")


# -------------------------------------------------- 9. one knob: the run root
@pytest.mark.slow
def test_default_root_dir_decides_where_a_run_writes(tmp_path, monkeypatch):
    root = write_shapes(tmp_path / "shapes", num_train=2, num_val=1, size=48)
    config = tiny_config(tmp_path, root, max_steps=1, val_check_interval=1)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "fit", "--config", str(config), "--trainer.default_root_dir", "elsewhere"]) == 0
    run = tmp_path / "elsewhere" / "tiny" / "version_0"
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "metrics.csv").is_file()
    assert list(run.glob("events.out.tfevents.*")) and not (tmp_path / "runs").exists()


# ------------------------------------------------ 10. predict's output errors
def test_predict_to_an_unwritable_or_full_output_is_one_line(tmp_path, model_file, monkeypatch, capsys):
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(image)
    blocked = tmp_path / "file"
    blocked.write_text("a file where a folder should be")
    assert main(["predict", "--checkpoint", str(model_file), "--input", str(image), "--output", str(blocked)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("zoo predict: error:") and len(err.splitlines()) == 1

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("zoo.fileio.os.fsync", full)
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(model_file), "--input", str(image), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no space left to write" in err and "MiB free" in err and len(err.splitlines()) == 1
    assert not [p for p in out.rglob("*") if p.is_file()]  # no half-written PNG, no temporary file


# ------------------------------- 3, 4, 6. kill -9, SIGTERM, SIGINT and resume
def train_process(workdir: Path, config: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(REPO / "train.py"), "fit", "--config", str(config), *extra]
    return subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)


def signal_at(step: int, signum: int) -> list[str]:
    return ["--trainer.callbacks+=faults.SignalAtStep", "--trainer.callbacks.init_args.step", str(step),
            "--trainer.callbacks.init_args.signal", str(signum)]  # fmt: skip


def run_state(workdir: Path) -> dict:
    checkpoint = torch.load(workdir / "runs/tiny/version_0/checkpoints/last.ckpt", weights_only=True)
    best = next(v for k, v in checkpoint["callbacks"].items() if "val_miou" in k)
    return {"step": checkpoint["global_step"], "state": checkpoint["state_dict"], "best": best["best_model_score"]}


@pytest.mark.slow
def test_kill_9_and_sigterm_then_resume_match_an_uninterrupted_run(tmp_path):
    """Kill -9 at step 5 (last.ckpt at 4, after the validation of step 4), resume with --ckpt_path last, SIGTERM at
    step 7 (saved at 7, exit 143), resume again to step 9: same folder, weights and best score as a straight run."""
    root = write_shapes(tmp_path / "shapes", num_train=6, num_val=2, size=48)
    config = tiny_config(tmp_path, root, max_steps=9, val_check_interval=4)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    straight.mkdir(), killed.mkdir()
    assert train_process(straight, config).returncode == 0
    first = train_process(killed, config, *signal_at(5, 9))
    assert first.returncode == -9
    assert run_state(killed)["step"] == 4  # one interval (2) lost at most
    second = train_process(killed, config, "--ckpt_path", "last", *signal_at(7, 15))
    assert second.returncode == 143, second.stderr[-2000:]
    assert "stopped by SIGTERM" in second.stderr and run_state(killed)["step"] == 7
    assert train_process(killed, config, "--ckpt_path", "last").returncode == 0
    assert [p.name for p in (killed / "runs" / "tiny").iterdir()] == ["version_0"]  # resumed in the same folder
    a, b = run_state(straight), run_state(killed)
    assert a["step"] == b["step"] == 9 and a["best"] == b["best"]
    assert all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])


@pytest.mark.slow
def test_sigint_saves_at_the_current_step_and_exits_non_zero(tmp_path):
    root = write_shapes(tmp_path / "shapes", num_train=4, num_val=1, size=48)
    config = tiny_config(tmp_path, root, max_steps=8, val_check_interval=8)
    result = train_process(tmp_path, config, *signal_at(3, 2))
    assert result.returncode == 1, result.stderr[-2000:]
    assert run_state(tmp_path)["step"] == 3
    last = Path("runs", "tiny", "version_0", "checkpoints", "last.ckpt")
    assert f"zoo train: stopped by Ctrl-C; {last} saved; resume with the same command and --ckpt_path last" in (
        result.stderr
    )


def test_resume_finds_nothing_and_starts_fresh(tmp_path, monkeypatch, capsys):
    root = write_shapes(tmp_path / "shapes", num_train=2, num_val=1, size=48)
    config = tiny_config(tmp_path, root, max_steps=1, val_check_interval=1)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "fit", "--config", str(config), "--ckpt_path", "last"]) == 0
    assert "no runs/tiny/version_*/checkpoints/last.ckpt; starting from step 0" in capsys.readouterr().err
    assert run_state(tmp_path)["step"] == 1
