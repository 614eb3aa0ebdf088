"""The LightningModule of semantic segmentation training: model, loss, metrics, optimizer and schedule."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.cli import OptimizerCallable
from pytorch_lightning.utilities import rank_zero_info
from torch.optim.lr_scheduler import PolynomialLR

from zoo.checkpoint import load_matching, model_meta
from zoo.data.io import IGNORE_INDEX, voc_palette
from zoo.data.stats import class_stats
from zoo.infer.tta import infer_logits
from zoo.metrics import SegmentationScores, confusion_matrix_metric, print_scores, scores_from_confusion
from zoo.models import Net, build_net
from zoo.train.losses import build_loss, parse_loss
from zoo.viz import plot_class_iou, plot_confusion_matrix


class NonFiniteTrainingError(ValueError):
    """The training loss, or the weights after an optimizer step, hold NaN or infinity."""


def sgd(params: Any) -> torch.optim.Optimizer:
    """The default optimizer: DeepLab's SGD (lr 0.007, momentum 0.9, weight decay 4e-5)."""
    return torch.optim.SGD(params, lr=0.007, momentum=0.9, weight_decay=4e-5)


def init_report(model: torch.nn.Module, skipped: list[str]) -> str:
    """What ``init_from`` loaded, honestly: e.g. "146 of 878 loaded (BatchNorm counters only); not loaded: ..."."""
    names = list(model.state_dict())
    loaded = [k for k in names if k not in set(skipped)]
    text = f"{len(loaded)} of {len(names)} tensors loaded"
    if loaded and all(k.endswith("num_batches_tracked") for k in loaded):
        text += " (BatchNorm counters only: no weight fits, is it a model of another architecture?)"
    return text + (f"; not loaded: {', '.join(skipped[:6])}{', ...' if len(skipped) > 6 else ''}" if skipped else "")


class SegmentationModule(pl.LightningModule):
    """Model, loss, optimizer and metrics of semantic segmentation training.

    Args:
        net: the network, :func:`zoo.models.build_model`'s arguments but ``num_classes`` (a
            :class:`zoo.models.Net` or a dict of its fields: encoder, decoder, output_stride, encoder_weights,
            aux_head, encoder_kwargs, decoder_kwargs, mean, std, semantics).
        num_classes: number of classes (linked from ``data.num_classes`` by the CLI).
        ignore_index: mask value left out of the loss and the metrics (linked from ``data.ignore_index``).
        class_names: class names (linked from the data); stored in checkpoints and used in tables.
        palette: one RGB colour per class (linked from the data); stored in checkpoints, used in overlays.
        loss: the training loss by name, or a weighted sum of names: "ce" (default), "dice", "focal", "lovasz",
            "ohem", e.g. "ce+0.5*dice" (:func:`zoo.train.losses.build_loss`).
        aux_weight: weight of the auxiliary head's loss (``net.aux_head``).
        class_weights: per-class loss weights, or "auto" for median-frequency balancing computed from the
            training split before the first step (``zoo data stats`` prints the same numbers).
        init_from: start from another model's weights (MMSegmentation's ``load_from``): a zoo model file or
            training checkpoint, or a published model (``"deeplab-tf:NAME"``). Tensors whose name and shape fit
            are loaded; the rest (e.g. a classifier for another class count) keep their initialisation.
        optimizer: a function of the parameters that returns the optimizer (LightningCLI's ``OptimizerCallable``;
            in YAML ``{class_path: torch.optim.AdamW, init_args: {lr: 0.003}}``); default :func:`sgd`.
        poly_power: the LR is ``lr * (1 - step / total_steps) ** poly_power``, stepped every optimizer step;
            total_steps is the Trainer's ``estimated_stepping_batches`` (``max_steps`` when set).
        tta: test-time arguments of :func:`zoo.infer.tta.infer_logits` (``scales``, ``flip``, ``slide``) for
            ``test``; default: one plain pass.

    ``validation_step`` returns the predicted class ids, which
    :class:`~zoo.train.overlays.ValidationOverlays` draws for TensorBoard (``val_overlays.num_images``).
    """

    def __init__(
        self,
        net: Net | None = None,
        num_classes: int = 21,
        ignore_index: int = IGNORE_INDEX,
        class_names: list[str] | None = None,
        palette: list[tuple[int, int, int]] | None = None,
        loss: str = "ce",
        aux_weight: float = 0.4,
        class_weights: list[float] | Literal["auto"] | None = None,
        init_from: str | None = None,
        optimizer: OptimizerCallable = sgd,
        poly_power: float = 0.9,
        tta: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if class_weights not in (None, "auto") and len(class_weights) != num_classes:
            raise ValueError(f"class_weights has {len(class_weights)} entries, expected num_classes={num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} entries, expected num_classes={num_classes}")
        net = Net() if net is None else net
        self.save_hyperparameters(ignore=["optimizer"])  # a function: not data, so not in a checkpoint
        self.hparams["net"] = dataclasses.asdict(net) if dataclasses.is_dataclass(net) else dict(net)
        self.optimizer = optimizer
        self.model = build_net(net, num_classes)
        parse_loss(loss)  # a misspelt loss fails here, before any data is read
        self.criterion = None if class_weights == "auto" else build_loss(loss, ignore_index, class_weights)
        if init_from:
            rank_zero_info(f"init_from {init_from}: {init_report(self.model, load_matching(self.model, init_from))}")
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
                "optimizer step, no checkpoint written: lower the learning rate (model.optimizer.init_args.lr) or "
                "check the data"
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
                "checkpoint written: lower the learning rate (model.optimizer.init_args.lr) or check the data"
            )

    def _eval_logits(self, batch: dict[str, Any], run: Any) -> torch.Tensor:
        """``run(images)`` on a batch; an image smaller than the batch (padded by ``PadCollate``) is run at its own
        size, so the padding never reaches the model and scores do not depend on the batch size."""
        images, sizes = batch["image"], batch.get("size")
        full = torch.tensor(images.shape[-2:], device=images.device)
        if sizes is None or bool((sizes.to(images.device) == full).all()):
            return run(images)
        outs = []
        for image, (h, w) in zip(images, sizes.tolist(), strict=True):
            logits = run(image[None, :, :h, :w])
            outs.append(F.pad(logits, (0, images.shape[-1] - w, 0, images.shape[-2] - h)))
        return torch.cat(outs)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """Log the loss, count the confusion matrix; returns the predicted class ids (for callbacks)."""
        logits = self._eval_logits(batch, self.model)
        self.log("val_loss", self._loss(logits, batch["mask"]), sync_dist=True, batch_size=len(logits))
        preds = logits.argmax(1)
        self.val_confusion.update(preds, batch["mask"])
        return preds

    def on_validation_epoch_end(self) -> None:
        self.val_scores = self._log_scores(self.val_confusion, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits = self._eval_logits(batch, lambda x: infer_logits(self.model, x, **(self.hparams.tta or {})))
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

    # -------------------------------------------------------------- optimizer
    def configure_optimizers(self) -> dict[str, Any]:
        opt = self.optimizer(self.parameters())
        total = self.trainer.estimated_stepping_batches
        if not np.isfinite(total) or total < 1:
            raise ValueError("poly LR needs a finite training length: set trainer.max_steps or trainer.max_epochs")
        schedule = PolynomialLR(opt, total_iters=int(total), power=self.hparams.poly_power)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # ------------------------------------------------------------- checkpoint
    def zoo_meta(self) -> dict[str, Any]:
        """The model description stored with every checkpoint (:func:`zoo.checkpoint.model_meta`)."""
        return model_meta(self.model, self.hparams.class_names, self.hparams.palette)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["zoo"] = self.zoo_meta()


__all__ = ["NonFiniteTrainingError", "SegmentationModule", "init_report", "sgd"]
