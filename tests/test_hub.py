"""save_pretrained / from_pretrained round trip (huggingface_hub's mixin), the model card, and the offline error."""

from __future__ import annotations

import json
import time
from pathlib import Path

import helpers
import pytest
import torch
from huggingface_hub import constants

import zoo
from zoo import hub
from zoo.encoders import build_encoder

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


def test_missing_folder_content_and_unreachable_hub_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub, "hub_reachable", lambda: True)  # as on a connected machine: the cache is asked first
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="is not a saved zoo model: .*model.safetensors missing"):
        zoo.from_pretrained(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="someone/no-such-model: neither a local folder nor a zoo model"):
        zoo.from_pretrained("someone/no-such-model", local_files_only=True)


def test_an_unreachable_hub_fails_at_once_and_the_cache_still_serves(tmp_path, monkeypatch) -> None:
    """The network unreachable (the endpoint's port refuses): the good error at once, not after ~45 s of retries."""
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens there
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    hub.hub_reachable.cache_clear()
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError) as error:
        zoo.from_pretrained("someone/some-model", cache_dir=tmp_path / "cache")
    assert time.perf_counter() - start < hub.PROBE_TIMEOUT_S + 2
    assert str(error.value) == (
        "someone/some-model: the Hugging Face Hub (http://127.0.0.1:9) cannot be reached and the model is not in the "
        "local cache; connect, or pass the folder written by save_pretrained"
    )
    assert constants.HF_HUB_OFFLINE is True  # the rest of the process (timm's downloads too) uses the cache only
    hub.hub_reachable.cache_clear()


@pytest.mark.parametrize("name", ["xception65", "tu-resnet18"])
def test_imagenet_weights_with_an_unreachable_hub_fail_at_once(name: str, tmp_path, monkeypatch) -> None:
    """timm's and smp's downloads go through the Hub: unreachable, the one-line error comes without retries."""
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens there
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    hub.hub_reachable.cache_clear()
    start = time.perf_counter()
    try:
        with pytest.raises(OSError) as error:
            build_encoder(name, weights="imagenet")
        assert time.perf_counter() - start < hub.PROBE_TIMEOUT_S + 5
        assert constants.HF_HUB_OFFLINE is True
        assert "\n" not in str(error.value)
    finally:
        hub.hub_reachable.cache_clear()
