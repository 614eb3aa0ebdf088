"""The README's Python examples run as written, and ``import zoo`` / ``zoo --help`` stay light."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_the_readme_has_python_examples() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None) -> None:
    monkeypatch.chdir(tmp_path)  # examples write files (model.pt, my-model/) into the working folder
    exec(compile(BLOCKS[index], f"README.md python block {index + 1}", "exec"), {})


def test_import_zoo_and_help_load_no_model_libraries() -> None:
    code = (
        "import sys, zoo, zoo.cli; print(sorted({'torch', 'timm', 'segmentation_models_pytorch'} & set(sys.modules)))"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"
    help_text = subprocess.run([sys.executable, "-m", "zoo", "--help"], capture_output=True, text=True, check=True)
    assert "COMMAND" in help_text.stdout and "train" in help_text.stdout
    version = subprocess.run([sys.executable, "-m", "zoo", "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.strip().startswith("zoo ")
