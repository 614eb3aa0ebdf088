"""Ablation study files (``configs/studies/*.yaml``): reading and checking them before any training.

A study holds a training config (the ``zoo train`` sections) and variants; each run of a variant is
:func:`zoo.train.run.build_run` over config layers (jsonargparse composes them): the study's config, the user's
``--config`` if any, the variant's overrides, and the run's budget and folder. See :mod:`zoo.train.ablation`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from zoo.train.run import build_run, check_config_keys

CSV_FIELDS = ("variant", "seed", "step", "val_miou", "train_loss", "params", "macs", "step_time")
STUDY_KEYS = ("description", "steps", "seeds", "val_every", "config", "variants", "panels")
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


@dataclass(frozen=True)
class Study:
    """A checked study: the training config, its variants and the budget every run gets.

    Args:
        name: the study's name (its file name without suffix).
        config: the training config shared by all variants (``model``, ``data``, ``trainer``... sections).
        variants: variant name -> the config layer over ``config`` (jsonargparse's merge: a section's settings
            merge key by key, a value such as ``encoder_kwargs`` is replaced whole).
        steps: optimizer steps per run.
        seeds: runs per variant (seeds 0 .. seeds-1).
        val_every: validation and checkpoint interval in steps.
        description: what the study reproduces.
        panels: figure panel title -> the variants drawn in it.
        user_config: a ``zoo train`` config layered over the study's (its ``data`` replaces the study's).
    """

    name: str
    config: dict[str, Any]
    variants: dict[str, dict[str, Any]]
    steps: int
    seeds: int
    val_every: int
    description: str = ""
    panels: dict[str, list[str]] | None = None
    user_config: str | None = None

    def layers(self, variant: str, seed: int, run_dir: Path, callbacks: list[dict[str, Any]] = ()) -> list[str]:
        """The ``--config`` arguments of one run of ``variant`` (for :func:`zoo.train.run.build_run`)."""
        base = dict(self.config)
        layers = []
        if self.user_config is not None:
            user = yaml.safe_load(Path(self.user_config).read_text()) or {}
            if user.get("data"):  # another dataset's arguments differ: its data replaces the study's
                base.pop("data", None)
        layers.append(base)
        if self.user_config is not None:
            layers.append(self.user_config)
        layers.append(self.variants[variant])
        trainer = {**RUN_TRAINER, "max_steps": self.steps, "val_check_interval": self.val_every}
        trainer |= {"default_root_dir": str(run_dir), "callbacks": list(callbacks)}
        layers.append(
            {
                "seed_everything": seed,
                "trainer": trainer,
                "last_checkpoint": {"every_n_train_steps": self.val_every},
            }
        )
        args = []
        for layer in layers:
            args += ["--config", layer if isinstance(layer, str) else yaml.safe_dump(layer, sort_keys=False)]
        return args

    def runs(self) -> Iterator[tuple[str, int]]:
        """Every (variant, seed), in the order they run."""
        return ((variant, seed) for variant in self.variants for seed in range(self.seeds))


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{what} {str(path)!r} must hold a mapping, found {type(data).__name__}")
    return data


def load_study(
    path: str | Path, *, config: str | Path | None = None, steps: int | None = None, seeds: int | None = None
) -> Study:
    """Read a study file and check it before any training.

    Args:
        path: the study YAML.
        config: a training config (``zoo train`` YAML) layered over the study's; its ``data`` section replaces the
            study's.
        steps: replaces the study's ``steps``.
        seeds: replaces the study's ``seeds``.

    Every key is checked as ``zoo train`` checks a config, and every variant's run is assembled
    (:func:`~zoo.train.run.build_run`, the module on the meta device), so a wrong setting fails here, naming the
    file and the variant, not after hours of training.
    """
    path = Path(path)
    data = _read_yaml(path, "study")
    unknown = sorted(set(data) - set(STUDY_KEYS))
    if unknown:
        raise ValueError(f"study {str(path)!r}: unknown keys {unknown}; valid keys: {', '.join(STUDY_KEYS)}")
    base = data.get("config") or {}
    if not isinstance(base, dict):
        raise ValueError(f"study {str(path)!r}: 'config' must be a mapping of zoo train sections")
    check_config_keys(path, base)
    if config is not None:
        check_config_keys(Path(config), _read_yaml(Path(config), "config"))
    study = Study(
        name=path.stem,
        config=base,
        variants=_variants(data.get("variants"), path),
        steps=int(steps if steps is not None else data.get("steps", 300)),
        seeds=int(seeds if seeds is not None else data.get("seeds", 1)),
        val_every=int(data.get("val_every", 50)),
        description=" ".join(str(data.get("description", "")).split()),
        panels=data.get("panels"),
        user_config=str(config) if config is not None else None,
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
        if overrides is not None and not isinstance(overrides, dict):
            raise ValueError(f"study {str(path)!r}, variant {name!r}: the overrides must be a mapping")
        check_config_keys(Path(f"{path} variant {name}"), overrides or {})
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
    """Assemble the variant's run as it will run (the module on the meta device: no weights allocated)."""
    where = f"study {str(path)!r}: variant {variant!r}"
    try:
        with torch.device("meta"):
            data = build_run(study.layers(variant, 0, Path("unused")), run=False).datamodule
        if data.hparams.prepare is None:  # else prepare_data writes the data when the run starts
            data.build_split(data.hparams.val_split)
    except (KeyError, TypeError, ValueError, FileNotFoundError) as error:
        raise ValueError(f"{where} does not build: {error}") from error
    except SystemExit as error:  # jsonargparse's parse error (printed above)
        raise ValueError(f"{where} does not parse (the error is printed above)") from error
