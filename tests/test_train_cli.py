"""``zoo train``'s user-facing checks: shipped configs by name, config typos, one optimizer setting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from zoo.cli import main
from zoo.cli.train import CONFIGS, resolve_config, shipped_configs


def test_shipped_configs_resolve_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert "quickstart" in shipped_configs()
    assert resolve_config("quickstart") == str(CONFIGS / "quickstart.yaml")
    (tmp_path / "mine.yaml").write_text("model: {}\n")
    assert resolve_config("mine.yaml") == "mine.yaml"  # a file is taken as given
    with pytest.raises(FileNotFoundError, match="--config nosuch: no such file, nor a shipped config"):
        resolve_config("nosuch")


def test_a_config_typo_names_the_file_and_the_closest_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "typo.yaml").write_text("model:\n  encodr: xception65\n")
    assert main(["train", "fit", "--config", "quickstart", "--config", "typo.yaml"]) == 2
    assert "typo.yaml: model.encodr is not a setting; did you mean model.net.encoder?" in capsys.readouterr().err
    (tmp_path / "section.yaml").write_text("trainr:\n  max_steps: 1\n")
    assert main(["train", "fit", "--config=section.yaml"]) == 2
    assert "section.yaml: unknown section 'trainr'; did you mean trainer?" in capsys.readouterr().err


def test_lightning_cli_optimizer_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "fit", "--config", "quickstart", "--optimizer", "Adam", "--print_config"])
    assert exit_info.value.code == 2


ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}


def zoo_process(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True, cwd=tmp_path,
                          timeout=300, env=ENV)  # fmt: skip


@pytest.mark.slow  # a fresh interpreter
def test_a_flag_typo_is_one_line_with_the_closest_flag_in_a_real_process(tmp_path: Path) -> None:
    done = zoo_process(tmp_path, "train", "fit", "--config", "quickstart", "--model.encodr", "xception41")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "zoo train: error: command line: --model.encodr is not a setting; did you mean --model.net.encoder?"
    )
    assert "usage:" not in done.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model.net.encoder_kwargs", "{widht: 0.25}"],
         "net.encoder_kwargs: 'widht' is not an argument of encoder 'xception65'; did you mean width?"),
        (["--trainer.accelerator", "gpu"],
         "trainer.accelerator gpu: no GPU is visible here (torch.cuda.is_available() is False); did you mean "
         "trainer.accelerator cpu (or auto)?"),
        (["--model.lr", "0.1"], "command line: --model.lr is now --model.optimizer.init_args.lr"),
        (["--data.write_shapes_if_missing", "{}"],
         "command line: --data.write_shapes_if_missing is now --data.prepare (with --data.dataset shapes-voc)"),
        (["--val_overlays.num_imags", "2"],
         "command line: --val_overlays.num_imags is not a setting; did you mean --val_overlays.num_images?"),
    ],
)  # fmt: skip
def test_ordinary_mistakes_are_one_line_exit_2(tmp_path, monkeypatch, capsys, args, message) -> None:
    if "gpu" in args and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.chdir(tmp_path)
    assert main(["train", "fit", "--config", "quickstart", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines()[-1] == f"zoo train: error: {message}"
    assert not (tmp_path / "runs").exists()  # a run that failed leaves no empty version_N folder


def shapes_config(tmp_path: Path, root: Path) -> Path:
    """One config name (``same.yaml``) on the shapes data written to ``root``: one step, a tiny model."""
    net = {"encoder": "xception65", "decoder": "fcn", "encoder_kwargs": {"width": 0.125}}
    config = {
        "trainer": {"accelerator": "cpu", "max_steps": 1, "enable_progress_bar": False, "val_check_interval": 1,
                    "check_val_every_n_epoch": None, "enable_model_summary": False},
        "model": {"net": net},
        "data": {"dataset": "shapes-voc", "root": str(root), "crop_size": 32, "batch_size": 2, "val_batch_size": 2,
                 "num_workers": 0, "prepare": {"num_train": 2, "num_val": 1, "size": 32}},
    }  # fmt: skip
    path = tmp_path / "same.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow  # two runs
def test_ckpt_path_last_refuses_a_run_on_other_data_and_leaves_it_untouched(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "fit", "--config", str(shapes_config(tmp_path, tmp_path / "a"))]) == 0
    run = tmp_path / "runs" / "same" / "version_0"
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["train", "fit", "--config", str(shapes_config(tmp_path, tmp_path / "b")), "--ckpt_path", "last"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(
        f"zoo train: error: ckpt_path last: {Path('runs/same/version_0/checkpoints/last.ckpt')} is "
        f"another run (data.root {str(tmp_path / 'a')!r} there, {str(tmp_path / 'b')!r} here)"
    )
    assert err.endswith("or start a new run without ckpt_path")
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # config.yaml and best kept
    assert sorted(p.name for p in (tmp_path / "runs" / "same").iterdir()) == ["version_0"]
