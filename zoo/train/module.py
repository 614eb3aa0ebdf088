"""The LightningModule of semantic segmentation training: model, loss, metrics, optimizer and schedule."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_info
from torch.optim.lr_scheduler import PolynomialLR

from zoo.checkpoint import load_matching, model_meta
from zoo.data.io import IGNORE_INDEX, voc_palette
from zoo.data.stats import class_stats
from zoo.infer.tta import infer_logits
from zoo.metrics import SegmentationScores, confusion_matrix_metric, print_scores, scores_from_confusion
from zoo.models import build_model
from zoo.train.losses import build_loss, parse_loss
from zoo.viz import overlay, plot_class_iou, plot_confusion_matrix


class NonFiniteTrainingError(ValueError):
    """The training loss, or the weights after an optimizer step, hold NaN or infinity."""


class SegmentationModule(pl.LightningModule):
    """Model, loss, optimizer and metrics of semantic segmentation training.

    Args:
        encoder: encoder name (``zoo.list_encoders()``, smp names, ``tu-<timm>``).
        decoder: decoder name (``zoo.list_decoders()``).
        num_classes: number of classes (linked from ``data.num_classes`` by the CLI).
        output_stride: encoder output stride, 8, 16 or 32.
        encoder_weights: None, "imagenet" or a weights file for the encoder.
        aux_head: add an auxiliary head on a middle feature (its loss weighted by ``aux_weight``).
        encoder_kwargs: extra encoder arguments (e.g. ``{"width": 0.25}``).
        decoder_kwargs: extra decoder arguments.
        mean: the model's input normalisation mean (RGB, 0..1 scale); default: the encoder's.
        std: the model's input normalisation std; default: the encoder's.
        semantics: "zoo" or "deeplab-tf" (TF DeepLab's forward pass, e.g. to fine-tune a converted model).
        aux_weight: weight of the auxiliary loss.
        loss: the training loss by name, or a weighted sum of names: "ce" (default), "dice", "focal", "lovasz",
            "ohem", e.g. "ce+0.5*dice" (:func:`zoo.train.losses.build_loss`).
        ignore_index: mask value left out of the loss and the metrics (linked from ``data.ignore_index``).
        class_weights: per-class loss weights, or "auto" for median-frequency balancing computed from the
            training split before the first step (``zoo data stats`` prints the same numbers).
        init_from: start from another model's weights (MMSegmentation's ``load_from``): a zoo model file or
            training checkpoint, or a published model (``"deeplab-tf:NAME"``). Tensors whose name and shape fit
            are loaded; the rest (e.g. a classifier for another class count) keep their initialisation and are
            listed.
        optimizer: "sgd" (momentum, weight decay) or "adamw".
        lr: base learning rate.
        momentum: SGD momentum.
        weight_decay: weight decay.
        poly_power: the LR is ``lr * (1 - step / total_steps) ** poly_power``, stepped every optimizer step;
            total_steps is the Trainer's ``estimated_stepping_batches`` (``max_steps`` when set).
        class_names: class names (linked from the data); stored in checkpoints and used in tables.
        palette: one RGB colour per class (linked from the data); stored in checkpoints, used in overlays.
        test_scales: image scales averaged at test time.
        test_flip: also average the horizontally flipped image at test time.
        test_slide: ``((crop_h, crop_w), (stride_h, stride_w))`` for sliding-window test inference, or None.
        num_log_images: validation images drawn as prediction overlays for TensorBoard each validation.
    """

    def __init__(
        self,
        encoder: str = "xception65",
        decoder: str = "deeplabv3plus",
        num_classes: int = 21,
        output_stride: int = 16,
        encoder_weights: str | None = None,
        aux_head: bool = False,
        encoder_kwargs: dict[str, Any] | None = None,
        decoder_kwargs: dict[str, Any] | None = None,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
        semantics: Literal["zoo", "deeplab-tf"] = "zoo",
        aux_weight: float = 0.4,
        loss: str = "ce",
        ignore_index: int = IGNORE_INDEX,
        class_weights: list[float] | Literal["auto"] | None = None,
        init_from: str | None = None,
        optimizer: Literal["sgd", "adamw"] = "sgd",
        lr: float = 0.007,
        momentum: float = 0.9,
        weight_decay: float = 4e-5,
        poly_power: float = 0.9,
        class_names: list[str] | None = None,
        palette: list[tuple[int, int, int]] | None = None,
        test_scales: tuple[float, ...] = (1.0,),
        test_flip: bool = False,
        test_slide: tuple[tuple[int, int], tuple[int, int]] | None = None,
        num_log_images: int = 4,
    ) -> None:
        super().__init__()
        if class_weights not in (None, "auto") and len(class_weights) != num_classes:
            raise ValueError(f"class_weights has {len(class_weights)} entries, expected num_classes={num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} entries, expected num_classes={num_classes}")
        self.save_hyperparameters()
        self.model = build_model(
            encoder=encoder,
            decoder=decoder,
            num_classes=num_classes,
            output_stride=output_stride,
            encoder_weights=encoder_weights,
            aux_head=aux_head,
            encoder_kwargs=encoder_kwargs,
            mean=mean,
            std=std,
            semantics=semantics,
            **(decoder_kwargs or {}),
        )
        parse_loss(loss)  # a misspelt loss fails here, before any data is read
        self.criterion = None if class_weights == "auto" else build_loss(loss, ignore_index, class_weights)
        if init_from:
            skipped = load_matching(self.model, init_from)
            rank_zero_info(f"init_from {init_from}: loaded all but {len(skipped)} tensors {skipped[:6]}")
        self.model.class_names = list(class_names) if class_names else None
        self.model.palette = [list(c) for c in palette] if palette else None
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        self.palette = [tuple(int(v) for v in c) for c in palette] if palette else voc_palette(num_classes)
        self.val_confusion = confusion_matrix_metric(num_classes, ignore_index)
        self.test_confusion = confusion_matrix_metric(num_classes, ignore_index)
        self.val_scores: SegmentationScores | None = None
        self.test_scores: SegmentationScores | None = None

    # ------------------------------------------------------------------ steps
    def forward(self, images: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        return self.model(images)

    def setup(self, stage: str) -> None:
        if self.criterion is None:  # class_weights="auto": median-frequency balancing over the training split
            data = self.trainer.datamodule
            stats = class_stats(data.build_split(data.hparams.train_split), self.hparams.num_classes,
                                self.hparams.ignore_index)  # fmt: skip
            weights = stats.median_frequency_weights().tolist()
            rank_zero_info(f"class weights (median frequency): {[round(w, 4) for w in weights]}")
            self.criterion = build_loss(self.hparams.loss, self.hparams.ignore_index, weights)

    def _loss(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return self.criterion(logits, masks)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        out = self.model(batch["image"])
        if isinstance(out, dict):
            main, aux = self._loss(out["out"], batch["mask"]), self._loss(out["aux"], batch["mask"])
            loss = main + self.hparams.aux_weight * aux
            self.log("train_aux_loss", aux)
        else:
            loss = self._loss(out, batch["mask"])
        if not torch.isfinite(loss):  # stop before the optimizer step spreads NaN into the weights
            raise NonFiniteTrainingError(
                f"training loss is {loss.item()} at step {self.global_step} (batch {batch_idx}); stopped before the "
                "optimizer step, no checkpoint written: lower model.lr or check the data"
            )
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """Lightning's optimizer step, then a check that the weights are finite (before any checkpoint is written)."""
        super().optimizer_step(*args, **kwargs)
        tensors = [t for t in (*self.model.parameters(), *self.model.buffers()) if t.is_floating_point()]
        if not torch.stack([t.isfinite().all() for t in tensors]).all():
            named = (*self.model.named_parameters(), *self.model.named_buffers())
            bad = next(k for k, v in named if v.is_floating_point() and not v.isfinite().all())
            raise NonFiniteTrainingError(
                f"weights hold NaN or infinity after step {self.global_step + 1} (first: {bad}); stopped, no "
                "checkpoint written: lower model.lr or check the data"
            )

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits = self.model(batch["image"])
        self.log("val_loss", self._loss(logits, batch["mask"]), sync_dist=True, batch_size=len(logits))
        preds = logits.argmax(1)
        self.val_confusion.update(preds, batch["mask"])
        if batch_idx == 0 and not self.trainer.sanity_checking:
            self._log_overlays(batch["image"], preds)

    def on_validation_epoch_end(self) -> None:
        self.val_scores = self._log_scores(self.val_confusion, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        hp = self.hparams
        logits = infer_logits(
            self.model, batch["image"], scales=tuple(hp.test_scales), flip=hp.test_flip, slide=hp.test_slide
        )
        self.test_confusion.update(logits.argmax(1), batch["mask"])

    def on_test_epoch_end(self) -> None:
        self.test_scores = scores = self._log_scores(self.test_confusion, "test")
        if self.trainer.is_global_zero and self.trainer.log_dir is not None:
            out = Path(self.trainer.log_dir)
            out.mkdir(parents=True, exist_ok=True)
            plot_confusion_matrix(scores.confusion.cpu().numpy(), self.class_names, out / "test_confusion_matrix.png")
            plot_class_iou(scores.iou.cpu().numpy(), self.class_names, out / "test_class_iou.png")

    # ---------------------------------------------------------------- metrics
    def _log_scores(self, metric: Any, prefix: str) -> SegmentationScores:
        """Compute (torchmetrics syncs the matrix across processes), log, print a table, and reset."""
        scores = scores_from_confusion(metric.compute())
        metric.reset()
        self.log(f"{prefix}_miou", scores.miou, prog_bar=True)
        self.log(f"{prefix}_acc", scores.pixel_accuracy)
        for name, iou in zip(self.class_names, scores.iou.tolist(), strict=True):
            if iou == iou:  # NaN: class absent from ground truth and prediction
                self.log(f"{prefix}_iou_{name}", iou)
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            print_scores(scores, self.class_names, title=f"IoU {prefix} (step {self.global_step})")
        return scores

    def _log_overlays(self, images: torch.Tensor, preds: torch.Tensor) -> None:
        loggers = [lg for lg in self.loggers if isinstance(lg, TensorBoardLogger)]
        count = min(self.hparams.num_log_images, len(images))
        if not loggers or count == 0 or not self.trainer.is_global_zero:
            return
        drawn = []
        for image, pred in zip(images[:count], preds[:count], strict=True):
            rgb = (image.float().clamp(0, 1) * 255).byte().permute(1, 2, 0).cpu().numpy()
            drawn.append(overlay(rgb, pred.byte().cpu().numpy(), self.palette))
        for logger in loggers:
            logger.experiment.add_images("val_overlays", np.stack(drawn), self.global_step, dataformats="NHWC")

    # -------------------------------------------------------------- optimizer
    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        if hp.optimizer == "sgd":
            opt = torch.optim.SGD(self.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        elif hp.optimizer == "adamw":
            opt = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        else:
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {hp.optimizer!r}")
        total = self.trainer.estimated_stepping_batches
        if not np.isfinite(total) or total < 1:
            raise ValueError("poly LR needs a finite training length: set trainer.max_steps or trainer.max_epochs")
        schedule = PolynomialLR(opt, total_iters=int(total), power=hp.poly_power)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # ------------------------------------------------------------- checkpoint
    def zoo_meta(self) -> dict[str, Any]:
        """The model description stored with every checkpoint (:func:`zoo.checkpoint.model_meta`)."""
        return model_meta(self.model, self.hparams.class_names, self.hparams.palette)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["zoo"] = self.zoo_meta()


__all__ = ["NonFiniteTrainingError", "SegmentationModule"]
