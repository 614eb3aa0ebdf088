"""Training progress as optimizer steps out of ``max_steps`` with an ETA, on a terminal or in a log file."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ProgressBar


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class StepProgress(ProgressBar):
    """``step 120/800 (15%) | loss 0.512 | 0.31 s/step | ETA 3m31s``: rewritten in place on a terminal, one line
    every ``lines`` of the run otherwise (a log file or a pipe gets progress too).

    Args:
        lines: lines printed over a whole run when the output is not a terminal.
        stream: where it writes (default: ``sys.stderr``).
    """

    def __init__(self, lines: int = 20, stream: TextIO | None = None) -> None:
        super().__init__()
        self.lines = lines
        self.stream = stream
        self._enabled = True
        self._start: float | None = None
        self._first_step = 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def _out(self) -> TextIO:
        return self.stream or sys.stderr

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start, self._first_step = time.perf_counter(), trainer.global_step

    def line(self, trainer: pl.Trainer) -> str:
        """The progress line at the trainer's current step."""
        step, total = trainer.global_step, trainer.max_steps
        if total is None or total < 0:
            total = int(trainer.estimated_stepping_batches)
        done = step - self._first_step
        per_step = (time.perf_counter() - (self._start or time.perf_counter())) / max(done, 1)
        loss = trainer.callback_metrics.get("train_loss")
        parts = [f"step {step}/{total} ({100 * step / max(total, 1):.0f}%)"]
        if loss is not None:
            parts.append(f"loss {float(loss):.4f}")
        parts += [f"{per_step:.2f} s/step", f"ETA {_duration(per_step * max(total - step, 0))}"]
        return " | ".join(parts)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if not self._enabled or not trainer.is_global_zero:
            return
        total = trainer.max_steps if trainer.max_steps > 0 else int(trainer.estimated_stepping_batches)
        every = max(total // max(self.lines, 1), 1)
        if self._out.isatty():
            self._out.write("\r" + self.line(trainer) + "\033[K")
            self._out.flush()
        elif trainer.global_step % every == 0 or trainer.global_step == total:
            print(self.line(trainer), file=self._out, flush=True)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._enabled and self._out.isatty() and not trainer.sanity_checking:
            self._out.write("\n")  # keep the last progress line above the validation table

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._enabled and self._out.isatty():
            self._out.write("\n")


__all__ = ["StepProgress"]
