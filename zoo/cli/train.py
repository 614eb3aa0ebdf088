"""``zoo train`` / ``train.py``: training, validation and testing from YAML configs with Lightning's LightningCLI.

Every argument of :class:`~zoo.train.module.SegmentationModule` (``model.*``),
:class:`~zoo.train.datamodule.SegmentationDataModule` (``data.*``) and the Trainer (``trainer.*``) can be set
from YAML (``--config``, several compose) or the command line. ``data.num_classes``, ``data.class_names`` and
``data.palette`` are linked to the model's arguments, so they are written only once (the data knows them).

A run writes everything (logs, checkpoints, plots) under ``--trainer.default_root_dir`` (default ``runs``), in
``<name>/version_N`` where the name is the last ``--config`` file's stem. ``last.ckpt`` is written every
``--last_checkpoint.every_n_train_steps`` optimizer steps whatever the score, the best-mIoU checkpoint after each
validation (``checkpoint.*``). ``--ckpt_path last`` resumes the newest run of the same name in its own folder.
Checkpoints are read with ``weights_only=True`` and written atomically (:mod:`zoo.train.checkpointing`). SIGTERM
and SIGINT save ``last.ckpt`` at the current step and exit non-zero (143 and 1); user errors are one line, exit 2.
"""

from __future__ import annotations

import difflib
import inspect
import sys
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import yaml
from lightning_fabric.plugins import CheckpointIO
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.utilities.exceptions import SIGTERMException

from zoo.checkpoint import read_checkpoint
from zoo.cli import USER_ERRORS, error_message
from zoo.train.checkpointing import (
    LastCheckpoint,
    RNGState,
    StopOnSigint,
    ValidateAtEnd,
    ZooCheckpointIO,
    find_last_checkpoint,
)
from zoo.train.datamodule import SegmentationDataModule
from zoo.train.module import SegmentationModule

DEFAULT_ROOT = "runs"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"  # shipped with the package: zoo train fit --config quickstart


class SegmentationCLI(LightningCLI):
    """LightningCLI with the data → model links, the best-mIoU (``checkpoint.*``) and interval
    (``last_checkpoint.*``) checkpoints, one run folder and resuming with ``--ckpt_path last``."""

    _resume_version: int | None = None

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.class_names", "model.class_names", apply_on="instantiate")
        parser.link_arguments("data.palette", "model.palette", apply_on="instantiate")
        parser.link_arguments("data.ignore_index", "model.ignore_index", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val_miou",
                "checkpoint.mode": "max",
                "checkpoint.filename": "best-epoch{epoch:03d}-step{step:06d}-miou{val_miou:.4f}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.add_lightning_class_args(LastCheckpoint, "last_checkpoint")

    def _run_name(self, config: Any) -> str:
        files = config.get("config") or []
        return Path(str(files[-1])).stem if files else "zoo"

    def _parse_ckpt_path(self) -> None:
        """``--ckpt_path last`` → the newest ``last.ckpt`` of this run; any checkpoint is read by the zoo's reader
        (one-line errors) before Lightning reads it."""
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else None
        if config is not None and config.get("ckpt_path") == "last":
            run_root = Path(config.trainer.default_root_dir or DEFAULT_ROOT) / self._run_name(config)
            found = find_last_checkpoint(run_root)
            if found is None:
                print(
                    f"zoo train: no {run_root}/version_*/checkpoints/last.ckpt; starting from step 0", file=sys.stderr
                )
            self._resume_version, config.ckpt_path = found if found else (None, None)
            config.ckpt_path = str(config.ckpt_path) if config.ckpt_path else None
        if config is not None and config.get("ckpt_path") not in (None, "hpc", "best", "last", "registry"):
            read_checkpoint(config.ckpt_path)
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        """One run folder for every logger: ``<default_root_dir>/<name>/version_N``."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        root = str(config.trainer.default_root_dir or DEFAULT_ROOT)
        config.trainer.default_root_dir = root
        for logger in config.trainer.logger or []:
            init_args = getattr(logger, "init_args", None)
            if init_args is None:
                continue
            if "name" in init_args and init_args.name is None:
                init_args.name = self._run_name(config)
            if "save_dir" in init_args:
                init_args.save_dir = _one_root(init_args.save_dir, root)
            if self._resume_version is not None and "version" in init_args:
                init_args.version = self._resume_version
        if self._resume_version is not None:
            _keep_metrics(Path(root) / self._run_name(config) / f"version_{self._resume_version}")

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[pl.Callback]) -> pl.Trainer:
        callbacks = [*callbacks, ValidateAtEnd(), RNGState(), StopOnSigint()]
        if config.get("enable_progress_bar", True) is not False:  # rich progress bar unless bars are switched off
            callbacks.append(RichProgressBar())
        plugins = config.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if any(isinstance(p, CheckpointIO) for p in plugins):
            raise ValueError("trainer.plugins: checkpoints are read and written by the zoo's own CheckpointIO")
        config["plugins"] = [*plugins, ZooCheckpointIO()]  # Lightning's CheckpointIO plugin: safe reads, atomic writes
        return super()._instantiate_trainer(config, callbacks)

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        for logger in trainer.loggers:  # fix every logger's version now, so TensorBoard and CSV share one folder
            _ = logger.version
        return trainer


def _one_root(save_dir: Any, root: str) -> str:
    """A logger's ``save_dir``: the run root, unless it was set to another folder (an error: one knob decides)."""
    if save_dir in (None, DEFAULT_ROOT, root):
        return root
    raise ValueError(
        f"a logger's save_dir is {save_dir} but trainer.default_root_dir is {root}: set where a run writes once, "
        "with --trainer.default_root_dir"
    )


def _keep_metrics(run_dir: Path) -> None:
    """Keep the CSV metrics of a resumed run (Lightning's CSVLogger deletes ``metrics.csv`` of a folder in use)."""
    metrics = run_dir / "metrics.csv"
    if metrics.is_file():
        index = next(i for i in range(1, 10_000) if not (run_dir / f"metrics.{i}.csv").exists())
        metrics.rename(run_dir / f"metrics.{index}.csv")


def cli_main(args: list[str] | None = None, run: bool = True) -> SegmentationCLI:
    """Run the training command line (``fit``, ``validate``, ``test``, ``--print_config``...).

    Args:
        args: command-line arguments (default: ``sys.argv[1:]``).
        run: run the subcommand; with False (and no subcommand in ``args``) only instantiate the classes.
    """
    # TensorBoard and CSV logs share one version folder; the CSV logger warns that it is not empty.
    warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
    return SegmentationCLI(
        SegmentationModule,
        SegmentationDataModule,
        seed_everything_default=0,
        trainer_defaults={
            "default_root_dir": DEFAULT_ROOT,
            "callbacks": [LearningRateMonitor(logging_interval="step")],
            "logger": [
                {
                    "class_path": "pytorch_lightning.loggers.TensorBoardLogger",
                    "init_args": {"save_dir": DEFAULT_ROOT, "name": None},
                },
                {
                    "class_path": "pytorch_lightning.loggers.CSVLogger",
                    "init_args": {"save_dir": DEFAULT_ROOT, "name": None},
                },
            ],
        },
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,  # one optimizer setting: model.optimizer/lr (SGD or AdamW, poly schedule)
        args=args,
        run=run,
    )


# The classes whose keyword arguments each top-level section of a config sets.
SECTIONS = {"model": SegmentationModule, "data": SegmentationDataModule, "trainer": pl.Trainer,
            "checkpoint": ModelCheckpoint, "last_checkpoint": LastCheckpoint}  # fmt: skip
TOP_LEVEL = {*SECTIONS, "seed_everything", "ckpt_path"}


def check_config_keys(path: Path, config: Any = None) -> None:
    """Raise ``ValueError`` naming ``path`` and the closest valid key for a misspelt key of a YAML config.

    Args:
        path: the config file.
        config: its parsed content (default: read from ``path``); a section given as a file name is read too.
    """
    config = yaml.safe_load(path.read_text()) if config is None else config
    if not isinstance(config, dict):
        return
    for key, value in config.items():
        if key not in TOP_LEVEL:
            raise ValueError(f"{path}: unknown section {key!r}{_closest(key, TOP_LEVEL)}")
        if key not in SECTIONS:
            continue
        if isinstance(value, str):  # a section given by file, e.g. data: base/voc-aug.yaml
            nested = (path.parent / value).resolve()
            if nested.is_file():
                check_config_keys(nested, {key: yaml.safe_load(nested.read_text())})
            continue
        valid = set(inspect.signature(SECTIONS[key].__init__).parameters) - {"self", "args", "kwargs"}
        for name in value or {}:
            if name not in valid:
                raise ValueError(f"{path}: {key}.{name} is not a setting{_closest(name, valid, key)}")


def _closest(name: str, valid: Any, section: str | None = None) -> str:
    match = difflib.get_close_matches(name, sorted(valid), n=1)
    return f"; did you mean {section + '.' if section else ''}{match[0]}?" if match else ""


def shipped_configs() -> list[str]:
    """Names of the configs shipped with the package (``quickstart``, ``studies/xception-paper``, ...)."""
    return sorted(
        str(p.relative_to(CONFIGS).with_suffix("")) for p in CONFIGS.rglob("*.yaml") if p.parent.name != "base"
    )


def resolve_config(value: str) -> str:
    """A ``--config`` value: a file as given, else the shipped config of that name (``quickstart``)."""
    if Path(value).exists() or Path(value).suffix in (".yaml", ".yml"):
        return value
    shipped = CONFIGS / f"{value}.yaml"
    if shipped.is_file():
        return str(shipped)
    raise FileNotFoundError(f"--config {value}: no such file, nor a shipped config ({', '.join(shipped_configs())})")


def _resolve_configs(argv: list[str]) -> tuple[list[str], list[Path]]:
    """``argv`` with every ``--config`` value resolved (:func:`resolve_config`), and those config files."""
    out, files = list(argv), []
    for i, arg in enumerate(out):
        if arg in ("--config", "-c") and i + 1 < len(out):
            out[i + 1] = resolve_config(out[i + 1])
            files.append(Path(out[i + 1]))
        elif arg.startswith("--config="):
            out[i] = "--config=" + resolve_config(arg.split("=", 1)[1])
            files.append(Path(out[i].split("=", 1)[1]))
    return out, files


def main(argv: list[str] | None = None) -> int:
    """``zoo train SUBCOMMAND ...``: run LightningCLI with ``argv`` (default: ``sys.argv[1:]``); returns the exit code.

    0: done; 2: a user error (one line naming the file or setting); 143: stopped by SIGTERM after saving
    ``last.ckpt`` (resume with ``--ckpt_path last``); 1: stopped by SIGINT (Lightning's exit code).
    """
    try:
        argv, files = _resolve_configs(list(sys.argv[1:] if argv is None else argv))
        for path in files:
            if path.is_file():
                check_config_keys(path)
        cli = cli_main(argv)
    except SIGTERMException:
        print("zoo train: stopped by SIGTERM; last.ckpt saved, resume with --ckpt_path last", file=sys.stderr)
        return 143
    except USER_ERRORS as error:
        print(f"zoo train: error: {error_message(error)}", file=sys.stderr)
        return 2
    best = getattr(cli.trainer, "checkpoint_callback", None) if cli.subcommand == "fit" else None
    if best is not None and best.best_model_path:
        print(f"zoo train: best val mIoU {float(best.best_model_score):.4f}: {best.best_model_path}")
    return 0


__all__ = ["SegmentationCLI", "cli_main", "main"]
