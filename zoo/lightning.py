"""Training with PyTorch Lightning: the model/loss/metrics module, the data module, and the CLI.

``train.py`` runs :func:`cli_main`; every argument of :class:`SegmentationModule` (``model.*``),
:class:`SegmentationDataModule` (``data.*``) and the Trainer (``trainer.*``) can be set from YAML
(``--config``) or the command line. ``data.num_classes``, ``data.class_names`` and ``data.palette``
are linked to the model's arguments, so they are written only once (the data knows them).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from zoo.datasets import DATASETS, build_dataset
from zoo.metrics import SegmentationScores, confusion_matrix_metric, print_scores, scores_from_confusion
from zoo.plots import overlay
from zoo.transforms import eval_transform, seed_worker, train_transform

IGNORE_INDEX = 255
_CLASS_KWARGS = {"classes", "class_names", "classes_file", "palette"}  # dataset arguments that change the classes


def default_palette(num_classes: int) -> list[tuple[int, int, int]]:
    """Pascal VOC's colour map (bit-interleaved), used when a dataset has no palette."""
    palette = []
    for label in range(num_classes):
        r = g = b = 0
        c = label
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette.append((r, g, b))
    return palette


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
        aux_weight: weight of the auxiliary loss.
        class_weights: optional per-class weights of the cross-entropy.
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
        aux_weight: float = 0.4,
        class_weights: list[float] | None = None,
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
        from zoo.models import build_model

        if class_weights is not None and len(class_weights) != num_classes:
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
            **(decoder_kwargs or {}),
        )
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("class_weights", weights, persistent=False)
        self.model.class_names = list(class_names) if class_names else None
        self.model.palette = [list(c) for c in palette] if palette else None
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        self.palette = [tuple(int(v) for v in c) for c in palette] if palette else default_palette(num_classes)
        self.val_confusion = confusion_matrix_metric(num_classes, IGNORE_INDEX)
        self.test_confusion = confusion_matrix_metric(num_classes, IGNORE_INDEX)
        self.val_scores: SegmentationScores | None = None
        self.test_scores: SegmentationScores | None = None

    # ------------------------------------------------------------------ steps
    def forward(self, images: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        return self.model(images)

    def _loss(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), masks, weight=self.class_weights, ignore_index=IGNORE_INDEX)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        out = self.model(batch["image"])
        if isinstance(out, dict):
            main, aux = self._loss(out["out"], batch["mask"]), self._loss(out["aux"], batch["mask"])
            loss = main + self.hparams.aux_weight * aux
            self.log("train_aux_loss", aux)
        else:
            loss = self._loss(out, batch["mask"])
        self.log("train_loss", loss, prog_bar=True)
        return loss

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
        from zoo.inference import infer_logits

        hp = self.hparams
        logits = infer_logits(
            self.model, batch["image"], scales=tuple(hp.test_scales), flip=hp.test_flip, slide=hp.test_slide
        )
        self.test_confusion.update(logits.argmax(1), batch["mask"])

    def on_test_epoch_end(self) -> None:
        self.test_scores = scores = self._log_scores(self.test_confusion, "test")
        if self.trainer.is_global_zero and self.trainer.log_dir is not None:
            from zoo.plots import plot_class_iou, plot_confusion_matrix

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
        mean = torch.tensor(self.model.mean, device=images.device).view(3, 1, 1)
        std = torch.tensor(self.model.std, device=images.device).view(3, 1, 1)
        drawn = []
        for image, pred in zip(images[:count], preds[:count], strict=True):
            rgb = ((image.float() * std + mean).clamp(0, 1) * 255).byte().permute(1, 2, 0).cpu().numpy()
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
        power = hp.poly_power
        schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: max(0.0, 1.0 - step / total) ** power)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # ------------------------------------------------------------- checkpoint
    def zoo_meta(self) -> dict[str, Any]:
        """The model description stored with every checkpoint (``zoo.models.model_meta``; read by ``load_model``)."""
        from zoo.models import model_meta

        return model_meta(self.model, self.hparams.class_names, self.hparams.palette)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["zoo"] = self.zoo_meta()


class SegmentationDataModule(pl.LightningDataModule):
    """Datasets, augmentation pipelines and loaders.

    Args:
        dataset: registry name (``zoo.list_datasets()``): voc, cityscapes, folder, shapes.
        root: dataset folder (None for the in-memory ``shapes``).
        train_split: split used for training.
        val_split: split used for validation.
        test_split: split used by ``test`` (default: ``val_split``).
        crop_size: training crop, an int or (height, width).
        scale: random scale range of training images.
        hflip: random horizontal flips in training.
        batch_size: training batch size (per process).
        val_batch_size: validation/test batch size; images are not resized, so use 1 unless all have one size.
        num_workers: dataloader worker processes.
        mean: normalisation mean (RGB, 0..1); default: the model's encoder's.
        std: normalisation std; default: the model's encoder's.
        dataset_kwargs: extra arguments of the dataset constructor (e.g. ``num_images`` and ``size`` for shapes).
        write_shapes_if_missing: if set, ``root`` is expected to hold the synthetic shapes data in VOC layout and
            ``prepare_data`` writes it there when ``root/classes.txt`` is missing, with these arguments of
            ``zoo.datasets.shapes.write_shapes`` (num_train, num_val, seed, size).
    """

    def __init__(
        self,
        dataset: str = "voc",
        root: str | None = None,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str | None = None,
        crop_size: int | tuple[int, int] = 513,
        scale: tuple[float, float] = (0.5, 2.0),
        hflip: bool = True,
        batch_size: int = 16,
        val_batch_size: int = 1,
        num_workers: int = 4,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
        dataset_kwargs: dict[str, Any] | None = None,
        write_shapes_if_missing: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if dataset not in DATASETS:
            DATASETS.get(dataset)  # raises KeyError listing the valid names
        self.save_hyperparameters()
        self.datasets: dict[str, Any] = {}
        self._info: dict[str, Any] | None = None

    # ------------------------------------------------------ classes and colours
    def _dataset_info(self) -> dict[str, Any]:
        """Class names and palette, read without building the split when the dataset class states them."""
        if self._info is None:
            hp = self.hparams
            cls = DATASETS.get(hp.dataset)
            fixed = isinstance(getattr(cls, "classes", None), list) and not _CLASS_KWARGS & set(hp.dataset_kwargs or {})
            if hp.write_shapes_if_missing is not None:  # what prepare_data writes (or wrote) there
                from zoo.datasets.shapes import ShapesDataset as source
            elif fixed and (hp.root is None or not Path(hp.root).exists()):
                source = cls  # the class's own list, without files (e.g. when only parsing a config)
            else:
                source = self.build_split(hp.val_split)  # a root may hold its own classes.txt
            classes, palette = list(source.classes), list(getattr(source, "palette", None) or [])
            palette = [tuple(int(v) for v in c) for c in palette] or default_palette(len(classes))
            self._info = {"classes": classes, "palette": palette}
        return self._info

    @property
    def num_classes(self) -> int:
        """Number of classes of the dataset."""
        return len(self._dataset_info()["classes"])

    @property
    def class_names(self) -> list[str]:
        """Class names of the dataset."""
        return self._dataset_info()["classes"]

    @property
    def palette(self) -> list[tuple[int, int, int]]:
        """One RGB colour per class."""
        return self._dataset_info()["palette"]

    # ------------------------------------------------------------- datasets
    def _shapes_written(self) -> bool:
        return self.hparams.root is not None and (Path(self.hparams.root) / "classes.txt").is_file()

    def prepare_data(self) -> None:
        hp = self.hparams
        if hp.write_shapes_if_missing is not None:
            if hp.root is None:
                raise ValueError("write_shapes_if_missing needs data.root: the folder to write the shapes data to")
            if not self._shapes_written():
                from zoo.datasets.shapes import write_shapes

                write_shapes(hp.root, **hp.write_shapes_if_missing)

    def build_split(self, split: str, transform: Any = None) -> Any:
        """The dataset of one split, built from this module's dataset name, root and dataset_kwargs."""
        hp = self.hparams
        kwargs = dict(hp.dataset_kwargs or {})
        if hp.root is not None:
            kwargs["root"] = hp.root
        return build_dataset(hp.dataset, split=split, transform=transform, **kwargs)

    def _normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        hp = self.hparams
        model = getattr(getattr(self.trainer, "lightning_module", None), "model", None)
        mean = hp.mean if hp.mean is not None else getattr(model, "mean", None)
        std = hp.std if hp.std is not None else getattr(model, "std", None)
        if mean is None or std is None:
            raise ValueError("data.mean/data.std are not set and no model is attached to read the encoder's from")
        return tuple(mean), tuple(std)

    def setup(self, stage: str) -> None:
        hp = self.hparams
        mean, std = self._normalisation()
        if stage == "fit" and "train" not in self.datasets:
            seed = int(torch.randint(0, 2**31 - 1, ()).item())  # from the global seed; workers reseed (seed_worker)
            transform = train_transform(hp.crop_size, mean, std, scale=tuple(hp.scale), hflip=hp.hflip, seed=seed)
            self.datasets["train"] = self.build_split(hp.train_split, transform)
        if stage in ("fit", "validate") and "val" not in self.datasets:
            self.datasets["val"] = self.build_split(hp.val_split, eval_transform(mean, std))
        if stage == "test" and "test" not in self.datasets:
            self.datasets["test"] = self.build_split(hp.test_split or hp.val_split, eval_transform(mean, std))

    def _loader(self, key: str, batch_size: int, train: bool) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(
            self.datasets[key],
            batch_size=batch_size,
            shuffle=train,
            drop_last=train,
            num_workers=workers,
            worker_init_fn=seed_worker if workers > 0 else None,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.hparams.batch_size, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.hparams.val_batch_size, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.hparams.val_batch_size, train=False)


class SegmentationCLI(LightningCLI):
    """LightningCLI with the data → model links and a best-mIoU checkpoint callback (``checkpoint.*``)."""

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.class_names", "model.class_names", apply_on="instantiate")
        parser.link_arguments("data.palette", "model.palette", apply_on="instantiate")
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
                {"class_path": "pytorch_lightning.loggers.TensorBoardLogger", "init_args": {"save_dir": "runs"}},
                {"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": "runs"}},
            ],
        },
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


__all__ = ["SegmentationCLI", "SegmentationDataModule", "SegmentationModule", "cli_main", "default_palette"]
