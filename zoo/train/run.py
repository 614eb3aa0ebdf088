"""One assembly of a training run: :func:`build_run` (``zoo train``, ``zoo ablation`` and the tests all use it).

A run is LightningCLI over :class:`~zoo.train.module.SegmentationModule` (``model.*``),
:class:`~zoo.train.datamodule.SegmentationDataModule` (``data.*``) and the Trainer (``trainer.*``), configured by
YAML layers (``--config``, several compose: a study variant is one more layer) and overrides. Every run gets:

- the data → model links (``num_classes``, ``class_names``, ``palette``, ``ignore_index``);
- :class:`~zoo.train.checkpointing.ZooCheckpointIO` (``weights_only`` reads, atomic finite-only writes),
  ``last.ckpt`` every ``last_checkpoint.every_n_train_steps`` steps, the best-mIoU checkpoint (``checkpoint.*``),
  the random state in checkpoints, SIGTERM and SIGINT saving ``last.ckpt``, validation at the last step;
- prediction overlays of the first validation batch in TensorBoard (``val_overlays.num_images``);
- one run folder ``<trainer.default_root_dir>/<name>/version_N`` for every logger; ``ckpt_path="last"`` resumes
  the newest run of that name only when its data and model settings match (:func:`check_resumable`); nothing is
  written into the folder before its checkpoint has loaded (the config is saved at ``on_fit_start``).
"""

from __future__ import annotations

import difflib
import inspect
import sys
import types
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import yaml
from lightning_fabric.plugins import CheckpointIO
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.cli import LightningCLI, SaveConfigCallback

from zoo.checkpoint import read_checkpoint
from zoo.models import Net
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
from zoo.train.overlays import ValidationOverlays
from zoo.train.progress import StepProgress

DEFAULT_ROOT = "runs"
# data → model: what the data knows is written once
LINKS = ("num_classes", "class_names", "palette", "ignore_index")


class SegmentationCLI(LightningCLI):
    """LightningCLI with the data → model links, the zoo's checkpoints and callbacks, and one run folder."""

    _resume_version: int | None = None
    last_run: SegmentationCLI | None = None  # the run whose trainer was built last (its folder, even if it failed)

    def add_arguments_to_parser(self, parser: Any) -> None:
        for name in LINKS:
            parser.link_arguments(f"data.{name}", f"model.{name}", apply_on="instantiate")
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
        parser.add_lightning_class_args(ValidationOverlays, "val_overlays")

    def _run_name(self, config: Any) -> str:
        files = config.get("config") or []
        return Path(str(files[-1])).stem if files else "zoo"

    def _parse_ckpt_path(self) -> None:
        """``ckpt_path="last"`` → the newest matching ``last.ckpt`` of this run; any checkpoint is read by the zoo's
        reader (one-line errors) before Lightning reads it."""
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else None
        if config is not None and config.get("ckpt_path") == "last":
            run_root = Path(config.trainer.default_root_dir or DEFAULT_ROOT) / self._run_name(config)
            found = find_last_checkpoint(run_root)
            if found is None:
                print(f"no {run_root}/version_*/checkpoints/last.ckpt; starting from step 0", file=sys.stderr)
            else:
                check_resumable(found[1], config)
            self._resume_version, config.ckpt_path = found if found else (None, None)
            config.ckpt_path = str(config.ckpt_path) if config.ckpt_path else None
        if config is not None and config.get("ckpt_path") not in (None, "hpc", "best", "last", "registry"):
            read_checkpoint(config.ckpt_path)
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        """One run folder for every logger: ``<default_root_dir>/<name>/version_N``; a missing accelerator is a
        one-line error."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        check_accelerator(config.trainer.accelerator)
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
        if config.get("logger") not in (False, None, []):
            callbacks.append(LearningRateMonitor(logging_interval="step"))
        if config.get("enable_progress_bar", True) is not False:  # steps out of max_steps with an ETA
            callbacks.append(StepProgress())
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
        self.run_dir = Path(trainer.loggers[0].log_dir) if trainer.loggers else Path(trainer.default_root_dir)
        self.new_run_dir = not self.run_dir.exists()
        SegmentationCLI.last_run = self
        return trainer


class SaveConfigAfterRestore(SaveConfigCallback):
    """Lightning's ``config.yaml`` writer, for ``fit`` at ``on_fit_start``: after the checkpoint has loaded, so a
    run that cannot resume leaves its folder as it was."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            super().setup(trainer, pl_module, stage)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().setup(trainer, pl_module, "fit")


def check_accelerator(accelerator: Any) -> None:
    """Raise ``ValueError`` when ``trainer.accelerator`` asks for a GPU that this machine does not have."""
    if isinstance(accelerator, str) and accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"trainer.accelerator {accelerator}: no GPU is visible here (torch.cuda.is_available() is False); "
            "did you mean trainer.accelerator cpu (or auto)?"
        )


def _plain(value: Any) -> Any:
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if not k.startswith("_")}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def check_resumable(path: Path, config: Any) -> None:
    """Raise ``ValueError`` when the run of ``path`` was trained with other data or model settings than
    ``config``'s: resuming it would continue (and overwrite) another experiment."""
    checkpoint = read_checkpoint(path)
    saved = {"data": checkpoint.get("datamodule_hyper_parameters") or {}, "model": checkpoint.get("hyper_parameters")}
    differ = []
    for section in ("data", "model"):
        now, then = _plain(config[section]), _plain(saved[section] or {})
        if isinstance(now, dict) and "init_args" in now:
            now = now["init_args"]
        for key in sorted(set(now) & set(then) - {*LINKS, "optimizer", "num_workers"}):
            if _plain(now[key]) != _plain(then[key]):
                differ.append(f"{section}.{key} {then[key]!r} there, {now[key]!r} here")
    if differ:
        raise ValueError(
            f"ckpt_path last: {path} is another run ({'; '.join(differ[:3])}); resume it anyway with ckpt_path "
            f"{path}, or start a new run without ckpt_path"
        )


def _one_root(save_dir: Any, root: str) -> str:
    """A logger's ``save_dir``: the run root, unless it was set to another folder (an error: one knob decides)."""
    if save_dir in (None, DEFAULT_ROOT, root):
        return root
    raise ValueError(
        f"a logger's save_dir is {save_dir} but trainer.default_root_dir is {root}: set where a run writes once, "
        "with trainer.default_root_dir"
    )


def _keep_metrics(run_dir: Path) -> None:
    """Keep the CSV metrics of a resumed run (Lightning's CSVLogger deletes ``metrics.csv`` of a folder in use)."""
    metrics = run_dir / "metrics.csv"
    if metrics.is_file():
        index = next(i for i in range(1, 10_000) if not (run_dir / f"metrics.{i}.csv").exists())
        metrics.rename(run_dir / f"metrics.{index}.csv")


def _tensorboard_without_tensorflow() -> None:
    """TensorBoard's event writer without importing TensorFlow (2.7 s and its oneDNN/absl lines per start):
    TensorBoard uses its own stub when the marker module ``tensorboard.compat.notf`` exists."""
    if "tensorflow" not in sys.modules:
        sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))


def build_run(args: list[str], run: bool = True, loggers: bool = True) -> SegmentationCLI:
    """Assemble (and with ``run``, run) one training run from LightningCLI arguments.

    Args:
        args: e.g. ``["fit", "--config", "a.yaml", "--config", "variant.yaml", "--trainer.max_steps", "100"]``.
        run: run the subcommand; with False (and no subcommand in ``args``) only instantiate the classes.
        loggers: TensorBoard and CSV logs in the run folder (a study records its own rows instead).
    """
    _tensorboard_without_tensorflow()
    # TensorBoard and CSV logs share one version folder; the CSV logger warns that it is not empty. Arguments come
    # from zoo's own command line (LightningCLI warns that sys.argv differs); torch's pytree deprecation is Lightning's.
    warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
    warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended to run from within Python")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")
    logger = [
        {"class_path": f"pytorch_lightning.loggers.{name}", "init_args": {"save_dir": DEFAULT_ROOT, "name": None}}
        for name in ("TensorBoardLogger", "CSVLogger")
    ]
    return SegmentationCLI(
        SegmentationModule,
        SegmentationDataModule,
        seed_everything_default=0,
        trainer_defaults={"default_root_dir": DEFAULT_ROOT, "logger": logger if loggers else False},
        save_config_callback=SaveConfigAfterRestore,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,  # model.optimizer (OptimizerCallable) with the poly schedule
        args=args,
        run=run,
    )


# The classes whose keyword arguments each top-level section of a config sets.
SECTIONS = {"model": SegmentationModule, "data": SegmentationDataModule, "trainer": pl.Trainer,
            "checkpoint": ModelCheckpoint, "last_checkpoint": LastCheckpoint, "val_overlays": ValidationOverlays,
            "model.net": Net}  # fmt: skip
TOP_LEVEL = {"model", "data", "trainer", "checkpoint", "last_checkpoint", "val_overlays", "seed_everything",
             "ckpt_path"}  # fmt: skip
# Settings that moved: the old key -> the new one.
RENAMED = {
    **{f"model.{k}": f"model.net.{k}" for k in ("encoder", "decoder", "output_stride", "encoder_weights", "aux_head",
                                                "encoder_kwargs", "decoder_kwargs", "mean", "std", "semantics")},
    **{f"model.{k}": f"model.optimizer.init_args.{k}" for k in ("lr", "momentum", "weight_decay")},
    "model.test_scales": "model.tta.scales", "model.test_flip": "model.tta.flip", "model.test_slide": "model.tta.slide",
    "data.write_shapes_if_missing": "data.prepare (with data.dataset shapes-voc)",
    "model.num_log_images": "val_overlays.num_images",
}  # fmt: skip
OLD_OPTIMIZERS = {"sgd": "torch.optim.SGD", "adamw": "torch.optim.AdamW"}


def valid_keys(section: str) -> set[str]:
    """The settings of a config section (``model``, ``model.net``, ``data``, ``trainer``...)."""
    cls = SECTIONS[section]
    init = cls if section == "model.net" else cls.__init__
    return set(inspect.signature(init).parameters) - {"self", "args", "kwargs"}


def check_key(key: str, where: str, value: Any = None) -> None:
    """Raise ``ValueError`` for a dotted setting (``model.net.encoder``) that does not exist, naming ``where``
    and the new or closest valid key."""
    if key in RENAMED:
        raise ValueError(f"{where}: {key} is now {RENAMED[key]}")
    if key == "model.optimizer" and isinstance(value, str):
        new = OLD_OPTIMIZERS.get(value, "torch.optim.NAME")
        raise ValueError(f"{where}: model.optimizer {value} is now model.optimizer.class_path {new}")
    parts = key.split(".")
    if parts[0] not in TOP_LEVEL:
        raise ValueError(f"{where}: unknown section {parts[0]!r}{_closest(parts[0], TOP_LEVEL)}")
    for depth in (2, 1):
        section = ".".join(parts[:depth])
        if section in SECTIONS and len(parts) > depth:
            name = parts[depth]
            if name not in valid_keys(section):
                raise ValueError(
                    f"{where}: {section}.{name} is not a setting{_closest(name, valid_keys(section), section)}"
                )
            return


def check_config_keys(path: Path, config: Any = None) -> None:
    """Raise ``ValueError`` naming ``path`` and the new or closest valid key for a misspelt or moved key of a YAML
    config.

    Args:
        path: the config file.
        config: its parsed content (default: read from ``path``); a section given as a file name is read too.
    """
    config = yaml.safe_load(path.read_text()) if config is None else config
    if not isinstance(config, dict):
        return
    for key, value in config.items():
        check_key(key, str(path))
        if key not in SECTIONS:
            continue
        if isinstance(value, str):  # a section given by file, e.g. data: base/voc-aug.yaml
            nested = (path.parent / value).resolve()
            if nested.is_file():
                check_config_keys(nested, {key: yaml.safe_load(nested.read_text())})
            continue
        for name, inner in (value or {}).items():
            check_key(f"{key}.{name}", str(path), inner)
            if key == "model" and name == "net" and isinstance(inner, dict):
                for field in inner:
                    check_key(f"model.net.{field}", str(path))


def _closest(name: str, valid: Any, section: str | None = None) -> str:
    match = difflib.get_close_matches(name, sorted(valid), n=1)
    if not match and section == "model":  # e.g. a network argument given to the module
        match = [f"net.{m}" for m in difflib.get_close_matches(name, sorted(valid_keys("model.net")), n=1)]
    return f"; did you mean {section + '.' if section else ''}{match[0]}?" if match else ""


__all__ = [
    "DEFAULT_ROOT",
    "SegmentationCLI",
    "build_run",
    "check_accelerator",
    "check_config_keys",
    "check_key",
    "check_resumable",
]
