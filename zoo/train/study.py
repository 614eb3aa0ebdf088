"""Ablation study files (``configs/studies/*.yaml``): reading, merging and checking them before any training.

See :mod:`zoo.train.ablation` for the file format and how a study runs.
"""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import yaml

from zoo.train.datamodule import SegmentationDataModule
from zoo.train.module import SegmentationModule

CSV_FIELDS = ("variant", "seed", "step", "val_miou", "train_loss", "params", "macs", "step_time")
STUDY_KEYS = ("description", "steps", "seeds", "val_every", "config", "variants", "panels")
CONFIG_KEYS = ("model", "data", "trainer")
# what every run's Trainer gets, whatever a config says: the budget, the folder and the callbacks are the study's
RUN_TRAINER = {
    "logger": False,
    "enable_checkpointing": True,
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "num_sanity_val_steps": 0,
    "check_val_every_n_epoch": None,
    "max_epochs": None,
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TRAINER_ARGS = set(inspect.signature(pl.Trainer.__init__).parameters) - {"self"}


@dataclass(frozen=True)
class Study:
    """A checked study: the training config, its variants and the budget every run gets.

    Args:
        name: the study's name (its file name without suffix).
        config: ``model``, ``data`` and ``trainer`` sections shared by all variants.
        variants: variant name -> overrides merged into ``config``.
        steps: optimizer steps per run.
        seeds: runs per variant (seeds 0 .. seeds-1).
        val_every: validation and checkpoint interval in steps.
        description: what the study reproduces.
        panels: figure panel title -> the variants drawn in it.
    """

    name: str
    config: dict[str, Any]
    variants: dict[str, dict[str, Any]]
    steps: int
    seeds: int
    val_every: int
    description: str = ""
    panels: dict[str, list[str]] | None = None

    def run_config(self, variant: str) -> dict[str, Any]:
        """The ``model``, ``data`` and ``trainer`` sections of one variant's runs (the budget included)."""
        config = merge(self.config, self.variants[variant])
        trainer = {**config.get("trainer", {}), **RUN_TRAINER}
        trainer |= {"max_steps": self.steps, "val_check_interval": self.val_every}
        return {"model": config.get("model", {}), "data": config.get("data", {}), "trainer": trainer}

    def runs(self) -> Iterator[tuple[str, int]]:
        """Every (variant, seed), in the order they run."""
        return ((variant, seed) for variant in self.variants for seed in range(self.seeds))


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``base`` with ``override`` merged in (dicts merge key by key, anything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{what} {str(path)!r} must hold a mapping, found {type(data).__name__}")
    return data


def _training_config(data: Any, source: str) -> dict[str, Any]:
    """The ``model``/``data``/``trainer`` sections of a config; ``seed_everything`` is the study's to set."""
    if not isinstance(data, dict):
        raise ValueError(f"{source}: the config must be a mapping of {', '.join(CONFIG_KEYS)}")
    unknown = sorted(set(data) - {*CONFIG_KEYS, "seed_everything"})
    if unknown:
        raise ValueError(f"{source}: a study reads only {', '.join(CONFIG_KEYS)} from a config, found {unknown}")
    for key in CONFIG_KEYS:
        if not isinstance(data.get(key) or {}, dict):
            raise ValueError(f"{source}: '{key}' must be a mapping, found {data[key]!r}")
    return {key: data.get(key) or {} for key in CONFIG_KEYS}


def load_study(
    path: str | Path, *, config: str | Path | None = None, steps: int | None = None, seeds: int | None = None
) -> Study:
    """Read a study file and check it before any training.

    Args:
        path: the study YAML.
        config: a training config (``zoo train`` YAML): its ``data`` section replaces the study's, its ``model``
            and ``trainer`` sections are merged over the study's.
        steps: replaces the study's ``steps``.
        seeds: replaces the study's ``seeds``.

    Every variant's module is built on the meta device and its trainer arguments are checked, and the data module
    is built, so a wrong argument fails here, naming the file and the variant, not after hours of training.
    """
    path = Path(path)
    data = _read_yaml(path, "study")
    unknown = sorted(set(data) - set(STUDY_KEYS))
    if unknown:
        raise ValueError(f"study {str(path)!r}: unknown keys {unknown}; valid keys: {', '.join(STUDY_KEYS)}")
    base = _training_config(data.get("config") or {}, f"study {str(path)!r}")
    if config is not None:  # its data replaces the study's (another dataset's arguments differ); the rest merges
        extra = _training_config(_read_yaml(Path(config), "config"), f"config {str(config)!r}")
        base = merge(base, extra) | ({"data": extra["data"]} if extra["data"] else {})
    study = Study(
        name=path.stem,
        config=base,
        variants=_variants(data.get("variants"), path),
        steps=int(steps if steps is not None else data.get("steps", 300)),
        seeds=int(seeds if seeds is not None else data.get("seeds", 1)),
        val_every=int(data.get("val_every", 50)),
        description=" ".join(str(data.get("description", "")).split()),
        panels=data.get("panels"),
    )
    _check_budget(study, path)
    _check_panels(study, path)
    for variant in study.variants:
        _check_variant(study, variant, path)
    return study


def _variants(variants: Any, path: Path) -> dict[str, dict[str, Any]]:
    if not isinstance(variants, dict) or not variants:
        raise ValueError(f"study {str(path)!r}: 'variants' must map at least one variant name to its overrides")
    for name, overrides in variants.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"study {str(path)!r}: variant name {name!r} must be letters, digits, '_', '-' or '.'")
        if overrides is not None:
            _training_config(overrides, f"study {str(path)!r}, variant {name!r}")
    return {name: overrides or {} for name, overrides in variants.items()}


def _check_budget(study: Study, path: Path) -> None:
    if study.steps < 1 or study.seeds < 1 or study.val_every < 1:
        raise ValueError(
            f"study {str(path)!r}: steps, seeds and val_every must be positive, got {study.steps}, {study.seeds} "
            f"and {study.val_every}"
        )
    if study.steps % study.val_every:
        raise ValueError(
            f"study {str(path)!r}: steps={study.steps} is not a multiple of val_every={study.val_every}, so the "
            "last steps would not be validated"
        )


def _check_panels(study: Study, path: Path) -> None:
    if study.panels is None:
        return
    if not isinstance(study.panels, dict) or not all(isinstance(v, list) for v in study.panels.values()):
        raise ValueError(f"study {str(path)!r}: 'panels' must map a panel title to a list of variants")
    for title, names in study.panels.items():
        missing = [n for n in names if n not in study.variants]
        if missing:
            raise ValueError(f"study {str(path)!r}: panel {title!r} names unknown variants {missing}")


def _check_variant(study: Study, variant: str, path: Path) -> None:
    config = study.run_config(variant)
    where = f"study {str(path)!r}: variant {variant!r}"
    unknown = sorted(set(config["trainer"]) - _TRAINER_ARGS)
    if unknown:
        raise ValueError(f"{where}: unknown trainer arguments {unknown}")
    try:
        data = SegmentationDataModule(**config["data"])
        if data.hparams.write_shapes_if_missing is None:  # else prepare_data writes it when the run starts
            data.build_split(data.hparams.val_split)
        with torch.device("meta"):
            SegmentationModule(**module_args(config["model"], data))
    except (KeyError, TypeError, ValueError, FileNotFoundError) as error:
        raise ValueError(f"{where} does not build: {error}") from error


def module_args(model: dict[str, Any], data: SegmentationDataModule) -> dict[str, Any]:
    """The module's arguments with the classes the data knows (what ``zoo train`` links)."""
    return {**model, "num_classes": data.num_classes, "class_names": data.class_names, "palette": data.palette}
