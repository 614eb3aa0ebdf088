"""``zoo ablation``: a tiny study runs every variant through Lightning, writes its CSV and plots, and resumes."""

from __future__ import annotations

import csv
import json
import os
import signal
from pathlib import Path

import pytest
import torch
import yaml
from pytorch_lightning.accelerators import CPUAccelerator

from zoo.cli import main
from zoo.errors import ArgumentError
from zoo.train.ablation import (
    CSV_FIELDS,
    Recorder,
    load_study,
    markdown_table,
    prepare_output,
    run_study,
    summarize,
)
from zoo.train.checkpointing import LastCheckpoint, RNGState, ZooCheckpointIO
from zoo.train.run import build_run

pytestmark = pytest.mark.usefixtures("one_thread")

STUDIES = sorted((Path(__file__).resolve().parents[1] / "configs" / "studies").glob("*.yaml"))
TINY_STUDY = {
    "description": "two variants, a few steps",
    "steps": 4,
    "seeds": 1,
    "val_every": 2,
    "config": {
        "trainer": {"accelerator": "cpu", "devices": 1},
        "model": {
            "net": {
                "encoder": "xception41",
                "decoder": "deeplabv3plus",
                "encoder_kwargs": {"width": 0.125},
                "decoder_kwargs": {"aspp_channels": 8, "low_level_channels": 8, "decoder_channels": 8},
            },
            "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.003}},
        },
        "data": {
            "dataset": "shapes-hard",
            "crop_size": 32,
            "batch_size": 2,
            "val_batch_size": 2,
            "num_workers": 0,
            "dataset_kwargs": {"num_images": 4, "size": 32},
        },
    },
    "variants": {
        "published": {},
        "no-residual": {"model": {"net": {"encoder_kwargs": {"width": 0.125, "residual": False}}}},
    },
}


@pytest.fixture
def study_file(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_STUDY, sort_keys=False))
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_tiny_study_writes_one_row_per_variant_seed_and_validation_and_its_plots(study_file, tmp_path):
    rows = run_study(load_study(study_file), tmp_path / "out", log=lambda line: None)
    table = read_csv(tmp_path / "out" / "results.csv")
    assert list(table[0]) == list(CSV_FIELDS)
    assert list(CSV_FIELDS) == ["variant", "seed", "step", "val_miou", "train_loss", "params", "macs", "step_time"]
    assert [(r["variant"], r["seed"], r["step"]) for r in table] == [
        ("published", "0", "2"),
        ("published", "0", "4"),
        ("no-residual", "0", "2"),
        ("no-residual", "0", "4"),
    ]
    assert all(0 <= float(r["val_miou"]) <= 1 and float(r["train_loss"]) > 0 for r in table)
    assert all(float(r["step_time"]) > 0 and int(r["macs"]) > 0 for r in table)
    published, no_residual = summarize(rows)
    assert published["params"] > no_residual["params"]  # the 1x1 shortcuts
    assert published["macs"] > no_residual["macs"]
    assert "| no-residual |" in markdown_table([published, no_residual])
    for plot in ("miou_vs_steps.png", "miou_vs_cost.png"):
        assert (tmp_path / "out" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "out").rglob("*.ckpt"))  # finished runs keep their rows, not their checkpoints


def test_a_study_stopped_by_sigterm_resumes_where_it_stopped(study_file, tmp_path, monkeypatch, capsys):
    original = Recorder.on_validation_end

    def sigterm_in_second_run(self, trainer, pl_module):
        original(self, trainer, pl_module)
        if self.variant == "no-residual" and trainer.global_step == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # Lightning's handler: save, then stop

    monkeypatch.setattr(Recorder, "on_validation_end", sigterm_in_second_run)
    out = tmp_path / "out"
    args = ["ablation", "--study", str(study_file), "--output", str(out)]
    assert main(args) == 143
    assert "the same command resumes the study" in capsys.readouterr().out
    run_dir = out / "runs" / "no-residual" / "seed0"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and not (run_dir / "done").exists()
    finished = (out / "runs" / "published" / "seed0" / "done").stat().st_mtime_ns

    monkeypatch.setattr(Recorder, "on_validation_end", original)
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "[1/2] published seed 0 (done)" in printed and "[2/2] no-residual seed 0 (resuming)" in printed
    assert "| published |" in printed and "| no-residual |" in printed
    assert (out / "runs" / "published" / "seed0" / "done").stat().st_mtime_ns == finished
    assert [r["step"] for r in read_csv(run_dir / "metrics.csv")] == ["2", "4"]  # continued from step 2
    assert not list(run_dir.rglob("*.ckpt"))


def test_output_holding_something_else_is_refused(study_file, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    out = str(tmp_path / "out")
    with pytest.raises(ArgumentError) as error:
        run_study(load_study(study_file), tmp_path / "out")
    assert str(error.value) == f"output: {out!r} is not empty and holds no study; pass force to use it"
    assert main(["ablation", "--study", str(study_file), "--output", out]) == 2
    assert capsys.readouterr().err.strip() == (
        f"zoo ablation: error: argument --output: {out!r} is not empty and holds no study; pass --force to use it"
    )
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


def test_another_budget_in_the_same_output_is_refused(study_file, tmp_path, capsys):
    prepare_output(load_study(study_file, steps=2), tmp_path / "out")
    prepare_output(load_study(study_file, steps=2), tmp_path / "out")  # the same study: resumed
    out, marker = str(tmp_path / "out"), tmp_path / "out" / "study.json"
    message = f"{out!r} holds another study or budget ({marker}); use another folder, or force to start over there"
    with pytest.raises(ArgumentError) as error:
        run_study(load_study(study_file, steps=4), tmp_path / "out")
    assert str(error.value) == f"output: {message}"
    assert main(["ablation", "--study", str(study_file), "--output", out, "--steps", "4"]) == 2
    expected = f"argument --output: {message.replace('or force', 'or --force')}"
    assert capsys.readouterr().err.strip() == f"zoo ablation: error: {expected}"
    prepare_output(load_study(study_file, steps=4), tmp_path / "out", force=True)
    assert json.loads((tmp_path / "out" / "study.json").read_text())["steps"] == 4


def assembled(study, variant, tmp_path):
    """The run of ``variant`` as zoo ablation assembles it (build_run), without training."""
    with torch.device("meta"):
        return build_run(study.layers(variant, 0, tmp_path / "run"), run=False)


def test_a_config_is_one_more_layer_over_the_study(study_file, tmp_path):
    config = tmp_path / "mine.yaml"
    data = {"dataset": "shapes", "batch_size": 4, "crop_size": 32}
    layer = {"seed_everything": 3, "model": {"optimizer": {"init_args": {"lr": 0.1}}}, "data": data}
    config.write_text(yaml.safe_dump(layer))
    study = load_study(study_file, config=config, steps=6, seeds=3)
    cli = assembled(study, "no-residual", tmp_path)
    assert cli.model.optimizer([torch.nn.Parameter(torch.zeros(1))]).defaults["lr"] == 0.1
    assert cli.model.hparams.net["encoder_kwargs"] == {"width": 0.125, "residual": False}
    assert cli.datamodule.hparams.dataset == "shapes" and cli.datamodule.hparams.dataset_kwargs is None
    assert cli.trainer.max_steps == 6 and cli.trainer.val_check_interval == 2 and study.seeds == 3
    assert cli.trainer.logger is None and isinstance(cli.trainer.accelerator, CPUAccelerator)
    config.write_text(yaml.safe_dump({"data": {"dataset": "voc", "root": str(tmp_path / "no-voc")}}))
    with pytest.raises(ValueError, match="variant 'published' does not build: .*no-voc"):
        load_study(study_file, config=config)  # a missing dataset is found before training
    config.write_text(yaml.safe_dump({"model": {"lr": 0.1}}))
    with pytest.raises(ValueError, match=r"mine.yaml: model.lr is now model.optimizer.init_args.lr"):
        load_study(study_file, config=config)


def test_a_study_run_links_ignore_index_and_writes_through_the_one_writer(study_file, tmp_path):
    """Every data → model link reaches a study's module; its checkpoints go through ZooCheckpointIO."""
    config = tmp_path / "mine.yaml"
    shapes = {"num_train": 4, "num_val": 2, "seed": 0, "size": 32}
    data = {"dataset": "shapes-voc", "root": str(tmp_path / "shapes"), "prepare": shapes}
    config.write_text(yaml.safe_dump({"data": {**data, "dataset_kwargs": {"ignore_index": 7}}}))
    cli = assembled(load_study(study_file, config=config), "published", tmp_path)
    assert cli.model.hparams.ignore_index == 7 and cli.model.val_confusion.ignore_index == 7
    logits, mask = torch.randn(1, cli.model.hparams.num_classes, 2, 2), torch.tensor([[[1, 7], [7, 7]]])
    only_first = torch.nn.functional.cross_entropy(logits[:, :, :1, :1], mask[:, :1, :1])
    assert torch.allclose(cli.model.criterion(logits, mask), only_first)  # the loss leaves the 7s out
    io = cli.trainer.strategy.checkpoint_io
    assert isinstance(io, ZooCheckpointIO)
    assert any(isinstance(c, LastCheckpoint) for c in cli.trainer.callbacks)
    assert any(isinstance(c, RNGState) for c in cli.trainer.callbacks)
    state = {"state_dict": {"w": torch.tensor([1.0, float("nan")])}}
    with pytest.raises(ValueError, match="non-finite weights"):
        io.save_checkpoint(state, tmp_path / "bad.ckpt")
    assert not (tmp_path / "bad.ckpt").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"variants": {"bad": {"model": {"net": {"encoder_kwargs": {"mid_activation": "gelu"}}}}}}, "'bad' does not"),
        ({"variants": {"bad": {"model": {"lr_decay": 0.1}}}}, "variant bad: model.lr_decay is not a setting"),
        ({"variants": {"bad": {"trainer": {"max_stepz": 3}}}}, "trainer.max_stepz is not a setting; did you mean"),
        ({"variants": {"bad": {"data": {"dataset": "shapez"}}}}, "variant 'bad' does not build: .*shapez"),
        ({"variants": {"a/b": {}}}, "variant name 'a/b' must be"),
        ({"variants": {}}, "'variants' must map at least one variant"),
        ({"budget": 3}, r"unknown keys \['budget'\]"),
        ({"val_every": 3}, "steps=4 is not a multiple of val_every=3"),
        ({"seeds": 0}, "must be positive"),
        ({"panels": {"Fig. 9": ["published", "no-residuals"]}}, r"unknown variants \['no-residuals'\]"),
    ],
)
def test_a_bad_study_fails_before_training(study_file, change, message):
    study_file.write_text(yaml.safe_dump(TINY_STUDY | change, sort_keys=False))
    with pytest.raises(ValueError, match=message):
        load_study(study_file)


def test_a_missing_study_is_a_one_line_error(tmp_path, capsys):
    assert main(["ablation", "--study", str(tmp_path / "none.yaml")]) == 2
    assert "zoo ablation: error: study" in capsys.readouterr().err


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_shipped_studies_load_and_build_every_variant(path):
    study = load_study(path)  # builds every variant's module on the meta device
    assert len(study.variants) >= 2 and study.seeds >= 2 and study.config["data"]["dataset"] == "shapes-hard"
    assert study.steps % study.val_every == 0


def test_shipped_studies():
    assert {p.stem for p in STUDIES} == {"xception-paper", "inception-vs-xception"}
    paper = load_study(STUDIES[[p.stem for p in STUDIES].index("xception-paper")])
    kwargs = {v: {**paper.config["model"]["net"]["encoder_kwargs"], **paper.variants[v].get("model", {}).get(
        "net", {}).get("encoder_kwargs", {})} for v in paper.variants}  # fmt: skip
    assert {k.get("segments", "all") for k in kwargs.values()} == {1, 4, 16, "all"}
    assert {k.get("mid_activation") for k in kwargs.values()} == {None, "relu", "elu"}
    assert {k.get("residual", True) for k in kwargs.values()} == {True, False}
    assert {k.get("order", "depthwise_first") for k in kwargs.values()} == {"depthwise_first", "pointwise_first"}
