"""``zoo train``'s user-facing checks: shipped configs by name, config typos, one optimizer setting."""

from __future__ import annotations

from pathlib import Path

import pytest

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
