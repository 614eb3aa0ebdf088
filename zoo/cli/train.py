"""``zoo train`` / ``train.py``: training, validation and testing from YAML configs with Lightning's LightningCLI.

Every argument of :class:`~zoo.train.module.SegmentationModule` (``model.*``),
:class:`~zoo.train.datamodule.SegmentationDataModule` (``data.*``) and the Trainer (``trainer.*``) can be set
from YAML (``--config``, several compose) or the command line. ``data.num_classes``, ``data.class_names`` and
``data.palette`` are linked to the model's arguments, so they are written only once (the data knows them).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar
from pytorch_lightning.cli import LightningCLI

from zoo.train.datamodule import SegmentationDataModule
from zoo.train.module import SegmentationModule


class SegmentationCLI(LightningCLI):
    """LightningCLI with the data → model links and a best-mIoU checkpoint callback (``checkpoint.*``)."""

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
                "checkpoint.save_last": True,
            }
        )

    def before_instantiate_classes(self) -> None:
        """Loggers without a name are named after the last ``--config`` file (``runs/<recipe>/version_N``)."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        files = config.get("config") or []
        name = Path(str(files[-1])).stem if files else "zoo"
        for logger in config.trainer.logger or []:
            init_args = getattr(logger, "init_args", None)
            if init_args is not None and "name" in init_args and init_args.name is None:
                init_args.name = name

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[pl.Callback]) -> pl.Trainer:
        if config.get("enable_progress_bar", True) is not False:  # rich progress bar unless bars are switched off
            callbacks = [*callbacks, RichProgressBar()]
        return super()._instantiate_trainer(config, callbacks)

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        for logger in trainer.loggers:  # fix every logger's version now, so TensorBoard and CSV share one folder
            _ = logger.version
        return trainer


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
            "callbacks": [LearningRateMonitor(logging_interval="step")],
            "logger": [
                {
                    "class_path": "pytorch_lightning.loggers.TensorBoardLogger",
                    "init_args": {"save_dir": "runs", "name": None},
                },
                {"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": "runs", "name": None}},
            ],
        },
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def main(argv: list[str]) -> int:
    """``zoo train SUBCOMMAND ...``: run LightningCLI with ``argv``; returns the exit code."""
    cli_main(argv)
    return 0


__all__ = ["SegmentationCLI", "cli_main", "main"]
