"""Fault tolerance of training, built on Lightning's own checkpointing.

- :class:`ZooCheckpointIO` is Lightning's checkpoint plugin (``CheckpointIO``): every checkpoint Lightning reads,
  including ``--ckpt_path``, goes through :func:`zoo.checkpoint.read_checkpoint` (``weights_only=True``, one-line
  errors); every checkpoint it writes is written atomically (temporary file in the destination folder, fsync,
  rename) and only if its weights are finite.
- :class:`LastCheckpoint` is Lightning's ``ModelCheckpoint`` writing ``last.ckpt`` every N optimizer steps whatever
  the score (before a validation of the same step, and again after it), at the end of ``fit``, and when SIGTERM or
  SIGINT stops the run.
- :class:`ValidateAtEnd` asks Lightning's loop to validate at the last step (the way ``EarlyStopping`` stops it).
- :class:`RNGState` keeps the global random state in checkpoints, so dropout after a resume draws what it would
  have drawn without the interruption.
- :class:`StopOnSigint` turns Ctrl+C into a stop at the next step boundary (Lightning handles SIGTERM that way).
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins import TorchCheckpointIO
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException

from zoo.checkpoint import read_checkpoint, write_checkpoint


class ZooCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` with the zoo's reader and an atomic, finite-only writer."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        """Write ``checkpoint`` to ``path`` atomically; refuse non-finite weights (nothing is written).

        Args:
            checkpoint: Lightning's checkpoint dict.
            path: destination file.
            storage_options: unused (local files only).
        """
        write_checkpoint(path, checkpoint)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        """Read ``path`` with :func:`zoo.checkpoint.read_checkpoint` (``weights_only=True`` whatever is asked).

        Args:
            path: the checkpoint.
            map_location: ``torch.load``'s ``map_location`` (default: the CPU).
            weights_only: ignored unless False, which is refused: checkpoints are data, never code.
        """
        if weights_only is False:
            raise ValueError(f"{path}: checkpoints are read with weights_only=True only")
        return read_checkpoint(path, map_location if map_location is not None else "cpu")


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt`` every ``every_n_train_steps`` optimizer steps whatever the score, at the end, and on a stop.

    Lightning's ``ModelCheckpoint`` (``monitor=None``, ``save_top_k=0``, ``save_last=True``) writes ``last.ckpt`` in
    ``on_train_batch_end``, before a validation of that step runs. This subclass writes it again after that
    validation (so the file also holds the best score so far), at the end of ``fit`` when the last step was not
    saved, and when SIGTERM (Lightning's ``SIGTERMException``) or SIGINT stops the run.

    Args:
        every_n_train_steps: optimizer steps between two writes of ``last.ckpt``.
        dirpath: folder of the checkpoints (default: ``<run folder>/checkpoints``).
    """

    def __init__(self, every_n_train_steps: int = 1000, dirpath: str | None = None) -> None:
        if every_n_train_steps < 1:
            raise ValueError(f"last_checkpoint.every_n_train_steps must be positive, got {every_n_train_steps}")
        super().__init__(
            dirpath=dirpath, monitor=None, save_top_k=0, save_last=True, every_n_train_steps=every_n_train_steps
        )

    def _save_last_now(self, trainer: pl.Trainer) -> None:
        if self._last_global_step_saved != trainer.global_step and not trainer.sanity_checking:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            self._last_global_step_saved = trainer.global_step

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning skips this when last.ckpt was written at this step's train-batch end; write it again so that it
        # holds this validation's best score (a resumed run then neither repeats nor forgets the validation).
        if (
            trainer.state.fn == "fit"
            and not trainer.sanity_checking
            and self._last_global_step_saved == trainer.global_step
        ):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save_last_now(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, (SIGTERMException, KeyboardInterrupt)) and trainer.state.fn == "fit":
            self._save_last_now(trainer)


class ValidateAtEnd(Callback):
    """Validate (and so checkpoint the best score) at the last training step, even off the validation interval.

    Setting ``trainer.should_stop`` at the last step makes Lightning's loop run validation before it stops, as it
    does for ``EarlyStopping``.
    """

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        at_max_steps = trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps
        at_max_epochs = trainer.max_epochs is not None and trainer.max_epochs > 0 and trainer.is_last_batch
        if at_max_steps or (at_max_epochs and trainer.current_epoch + 1 >= trainer.max_epochs):
            trainer.should_stop = True


class RNGState(Callback):
    """The global torch random state (CPU and CUDA) in every checkpoint, restored on resume."""

    def state_dict(self) -> dict[str, Any]:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        return {"cpu": torch.get_rng_state(), "cuda": cuda}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["cpu"])
        if state_dict["cuda"] and torch.cuda.is_available() and len(state_dict["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


class StopOnSigint(Callback):
    """The first SIGINT (Ctrl+C) stops training at the end of the current step, like Lightning's SIGTERM handling.

    The run then raises ``KeyboardInterrupt`` there; Lightning calls ``on_exception`` (``LastCheckpoint`` saves)
    and exits with code 1. A second SIGINT interrupts at once.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: keep Python's default
            self._previous = None

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt(f"SIGINT: stopped at step {trainer.global_step}")

    def _restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()


def find_last_checkpoint(run_root: str | Path) -> tuple[int, Path] | None:
    """The newest ``version_N/checkpoints/last.ckpt`` under a run's folder, as ``(N, path)``; None if none.

    Args:
        run_root: ``<default_root_dir>/<run name>``.
    """
    found = []
    for path in Path(run_root).glob("version_*/checkpoints/last.ckpt"):
        version = path.parent.parent.name.removeprefix("version_")
        if version.isdigit():
            found.append((int(version), path))
    return max(found) if found else None


__all__ = [
    "LastCheckpoint",
    "RNGState",
    "StopOnSigint",
    "ValidateAtEnd",
    "ZooCheckpointIO",
    "find_last_checkpoint",
]
