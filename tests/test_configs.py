"""Every YAML file in configs/ parses with the training CLI and builds its model and data module."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from zoo.cli.train import cli_main
from zoo.train import SegmentationDataModule, SegmentationModule

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
NAME = re.compile(
    r"(?P<decoder>[a-z0-9]+)_(?P<encoder>[a-z0-9]+)-os(?P<os>\d+)_(?P<batch>\d+)x(?P<crop>\d+)_(?P<data>[a-z-]+)"
)


def test_configs_exist():
    names = {p.stem for p in CONFIGS}
    assert "quickstart" in names
    assert "deeplabv3plus_xception65-os16_16x513_voc-aug" in names
    assert "deeplabv3plus_xception65-os16_8x769_cityscapes" in names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_parses_and_builds(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # loggers and data paths are relative to the working directory
    cli = cli_main(["--config", str(path), "--model.net.encoder_weights", "null"], run=False)
    model, data = cli.model, cli.datamodule
    assert isinstance(model, SegmentationModule) and isinstance(data, SegmentationDataModule)
    # num_classes, class names and palette come from the data (link_arguments)
    assert model.model.num_classes == data.num_classes == len(data.class_names)
    assert model.hparams.class_names == data.class_names
    assert cli.trainer.max_steps > 0
    match = NAME.fullmatch(path.stem)
    if match:  # a paper recipe: its name states the decoder, encoder, output stride, batch and crop
        net = model.hparams.net
        assert net["decoder"] == match["decoder"] and net["encoder"] == match["encoder"]
        assert net["output_stride"] == int(match["os"])
        assert data.hparams.batch_size == int(match["batch"]) and data.hparams.crop_size == int(match["crop"])
        assert data.hparams.dataset == {"voc-aug": "voc", "cityscapes": "cityscapes"}[match["data"]]
    else:
        assert path.stem == "quickstart", (
            f"{path.name} is not named {{decoder}}_{{encoder}}-os{{N}}_{{B}}x{{crop}}_{{data}}"
        )


def test_voc_recipe_values(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = next(p for p in CONFIGS if p.stem == "deeplabv3plus_xception65-os16_16x513_voc-aug")
    cli = cli_main(["--config", str(path), "--model.net.encoder_weights", "null"], run=False)
    optimizer = cli.model.optimizer([torch.nn.Parameter(torch.zeros(1))])
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["lr"] == 0.007
    assert optimizer.defaults["momentum"] == 0.9 and optimizer.defaults["weight_decay"] == 4e-5
    assert cli.model.hparams.poly_power == 0.9 and cli.trainer.max_steps == 30000
    assert cli.datamodule.hparams.train_split == "train_aug" and cli.model.model.num_classes == 21


def test_print_config(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = next(p for p in CONFIGS if p.stem == "quickstart")
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--config", str(path), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["net"]["decoder"] == "deeplabv3plus"
    assert printed["model"]["optimizer"]["class_path"] == "torch.optim.AdamW"
    assert printed["checkpoint"]["monitor"] == "val_miou"
    assert "/" not in printed["checkpoint"]["filename"]


@pytest.mark.parametrize(
    "config, message",
    [
        ({"model": {"encoder": "xception65"}}, "model.encoder is now model.net.encoder"),
        ({"model": {"lr": 0.01}}, "model.lr is now model.optimizer.init_args.lr"),
        ({"model": {"optimizer": "adamw"}},
         "model.optimizer adamw is now model.optimizer.class_path torch.optim.AdamW"),
        ({"model": {"test_flip": True}}, "model.test_flip is now model.tta.flip"),
        ({"model": {"net": {"encodr": "xception65"}}},
         "model.net.encodr is not a setting; did you mean model.net.encoder?"),
        ({"model": {"num_log_images": 2}}, "model.num_log_images is now val_overlays.num_images"),
        ({"data": {"write_shapes_if_missing": {"num_train": 2}}},
         "data.write_shapes_if_missing is now data.prepare (with data.dataset shapes-voc)"),
    ],
)  # fmt: skip
def test_a_config_with_old_keys_fails_in_one_line_naming_the_new_key(tmp_path, capsys, config, message):
    from zoo.cli import main

    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", "fit", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"zoo train: error: {path}: {message}"
