"""Prediction overlays of the first validation batch in TensorBoard: a logging callback, so the LightningModule
knows nothing of loggers (the ``val_overlays`` section of a training config)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger

from zoo.viz import overlay


class ValidationOverlays(pl.Callback):
    """After each validation, draw the class colours the model predicts over the first images of the first batch,
    as ``val_overlays`` images of every TensorBoard logger (no TensorBoard logger: nothing is drawn).

    Args:
        num_images: images of the first validation batch drawn each validation (0: none).
    """

    def __init__(self, num_images: int = 4) -> None:
        if num_images < 0:
            raise ValueError(f"val_overlays.num_images must be 0 or more, got {num_images}")
        self.num_images = num_images

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: dict[str, Any],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Draw ``outputs`` (the predicted class ids that ``validation_step`` returns) of batch 0."""
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        count = min(self.num_images, len(batch["image"]))
        if batch_idx != 0 or trainer.sanity_checking or not trainer.is_global_zero or not loggers or count == 0:
            return
        drawn = []
        for image, pred in zip(batch["image"][:count], outputs[:count], strict=True):
            rgb = (image.float().clamp(0, 1) * 255).byte().permute(1, 2, 0).cpu().numpy()
            drawn.append(overlay(rgb, pred.to(torch.uint8).cpu().numpy(), pl_module.palette))
        for logger in loggers:
            logger.experiment.add_images("val_overlays", np.stack(drawn), trainer.global_step, dataformats="NHWC")


__all__ = ["ValidationOverlays"]
