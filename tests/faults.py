"""A callback that signals its own training process at a chosen step (fault injection for the resume tests).

Used from a subprocess: ``train.py fit ... --trainer.callbacks+=faults.SignalAtStep
--trainer.callbacks.init_args.step 5 --trainer.callbacks.init_args.signal 9`` with ``tests/`` on PYTHONPATH.
"""

from __future__ import annotations

import os
import signal as signals

import pytorch_lightning as pl


class SignalAtStep(pl.Callback):
    """Send ``signal`` to this process once, at the end of optimizer step ``step`` (before checkpoints are written).

    Args:
        step: the global step (after the optimizer step) at which to send it.
        signal: signal number (9 = SIGKILL, 15 = SIGTERM, 2 = SIGINT).
    """

    def __init__(self, step: int, signal: int = int(signals.SIGKILL)) -> None:
        self.step, self.signal = step, signal

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signal)
