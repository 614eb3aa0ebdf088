"""save_pretrained / from_pretrained round trip (huggingface_hub's mixin), the model card, and the offline error."""

from __future__ import annotations

import json
from pathlib import Path

import helpers
import pytest
import torch

import zoo

pytestmark = pytest.mark.usefixtures("one_thread")


def test_round_trip_through_a_folder(tmp_path: Path) -> None:
    model = helpers.tiny_model("fcn", num_classes=3).eval()
    model.class_names, model.palette = ["sky", "road", "car"], [[0, 0, 255], [128, 64, 128], [0, 0, 142]]
    model.card = {"dataset": "shapes", "metrics": {"val_miou": 0.5}}
    model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["build_args"] == model.build_args and config["class_names"] == ["sky", "road", "car"]
    card = (tmp_path / "m" / "README.md").read_text()
    assert "pipeline_tag: image-segmentation" in card and "sky, road, car" in card and "val_miou" in card

    loaded = zoo.from_pretrained(tmp_path / "m")
    assert not loaded.training and loaded.palette == model.palette and loaded.card == model.card
    x = torch.rand(1, 3, 45, 61)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_missing_folder_content_and_unreachable_hub_ids(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="is not a saved zoo model: .*model.safetensors missing"):
        zoo.from_pretrained(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="someone/no-such-model: neither a local folder nor a zoo model"):
        zoo.from_pretrained("someone/no-such-model", local_files_only=True)
