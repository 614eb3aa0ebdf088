"""Batch inference on many processes and machines through Lightning: ``Trainer.predict`` and ``Trainer.test``.

The engine is the one training uses (strategies, cluster environments: ``torchrun``, SLURM's ``srun``), not a
launcher of our own. :func:`predict_to_folder` lists the input once (global rank 0, in the data module's
``prepare_data``, see :mod:`zoo.infer.listing`), every process reads its own batches of the listing, DataLoader
workers decode the images, :class:`PredictorModule` runs a :class:`~zoo.infer.predictor.Predictor` (its scales,
flip and sliding window) in ``predict_step``, and :class:`MaskWriter` (a ``BasePredictionWriter``) writes each
image's mask and overlay atomically as its batch finishes. An image whose outputs exist is skipped before it is
decoded (so a killed run resumes where it stopped), an unreadable one is listed with its reason, and
``summary.json`` counts what every process wrote, skipped and failed. :func:`evaluate_distributed` scores a
dataset through ``Trainer.test``: each process sees a disjoint share of the images (no padding repeats) and the
torchmetrics confusion matrix is summed over the processes, so the scores equal a one-process run exactly.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader

from zoo.data.io import IGNORE_INDEX, write_image, write_mask
from zoo.fileio import atomic_write
from zoo.infer.evaluate import score_item
from zoo.infer.listing import ImageShards, Item, Naming, stem_names, write_listing
from zoo.infer.predictor import Predictor
from zoo.metrics import SegmentationScores, confusion_matrix_metric, scores_from_confusion

Render = Callable[[np.ndarray, np.ndarray], np.ndarray]
WORK_FOLDER = ".zoo-predict"
# Lightning's warnings about what this module does on purpose: a sized IterableDataset (its shards are split per
# worker, so the length holds), batches kept on the host, no batch indices for an IterableDataset.
EXPECTED_WARNINGS = (
    "Your `IterableDataset` has `__len__` defined",
    "You have overridden `transfer_batch_to_device`",
    "Couldn't infer the batch indices",
)


@dataclass(frozen=True)
class PredictionFiles:
    """Where the outputs of an image go: ``root/pred/<name>.png`` (mask) and ``root/vis/<name>.png`` (overlay).

    Args:
        root: the output folder.
        overwrite: redo images whose outputs exist (otherwise :meth:`done` skips them).
        overlays: an overlay is written for each image (so it is part of what :meth:`done` looks for).
    """

    root: Path
    overwrite: bool = False
    overlays: bool = True

    def mask(self, name: str) -> Path:
        return self.root / "pred" / f"{name}.png"

    def overlay(self, name: str) -> Path:
        return self.root / "vis" / f"{name}.png"

    def done(self, name: str) -> bool:
        """Not ``overwrite``, and the outputs exist (each is written atomically, so an existing file is complete)."""
        if self.overwrite or (self.overlays and not self.overlay(name).is_file()):
            return False
        return self.mask(name).is_file()


def _as_list(items: list[Any]) -> list[Any]:
    return items


class PredictorModule(pl.LightningModule):
    """A :class:`~zoo.infer.predictor.Predictor` as a LightningModule: masks in ``predict_step``, scores in ``test``.

    The predictor's model (when it is a ``torch.nn.Module``) is a submodule, so Lightning puts it on each
    process's device; batches stay lists of uint8 images, which the predictor turns into tensors there.

    Args:
        predictor: the predictor (its scales, flip, sliding window and padding apply).
        ignore_index: ``test``: the mask value left out of the confusion matrix.
        show: ``test``: called with each item and its predicted mask (``zoo eval --show-dir``).
    """

    def __init__(
        self,
        predictor: Predictor,
        *,
        ignore_index: int = IGNORE_INDEX,
        show: Callable[[dict[str, Any], np.ndarray], None] | None = None,
    ) -> None:
        super().__init__()
        self.predictor = predictor
        self.net = predictor.model if isinstance(predictor.model, torch.nn.Module) else None
        self.confusion = confusion_matrix_metric(predictor.num_classes, ignore_index)
        self.show = show
        self.scores: SegmentationScores | None = None

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        return batch  # uint8 images; the predictor moves its tensors

    def _place(self) -> None:
        if self.net is not None:
            self.predictor.device = self.device

    def on_predict_start(self) -> None:
        self._place()

    def on_test_start(self) -> None:
        self._place()

    def predict_step(self, batch: list[Item], batch_idx: int = 0) -> list[tuple[Item, np.ndarray | None]]:
        kept = [item for item in batch if item.image is not None]
        masks = iter(self.predictor.predict_batch([item.image for item in kept]) if kept else [])
        return [(item, next(masks) if item.image is not None else None) for item in batch]

    def test_step(self, batch: list[dict[str, Any]], batch_idx: int = 0) -> None:
        for item in batch:
            score_item(self.predictor, self.confusion, item, batch_idx, self.show, self.device)

    def on_test_epoch_end(self) -> None:
        self.scores = scores_from_confusion(self.confusion.compute().cpu())  # summed over the processes


class MaskWriter(BasePredictionWriter):
    """Writes each image's mask and overlay as its batch finishes; counts, per process, and ``summary.json``.

    Args:
        files: where the outputs go.
        palette: RGB colour per class for the palette PNG masks.
        render: the overlay picture of ``(image, mask)`` (None: no ``vis/``).
    """

    def __init__(self, files: PredictionFiles, palette: Sequence[Sequence[int]], render: Render | None = None):
        super().__init__(write_interval="batch")
        self.files, self.palette, self.render = files, [tuple(c) for c in palette], render
        self.summary: dict[str, Any] | None = None
        self._reset()

    def _reset(self) -> None:
        self.written, self.skipped, self.failed, self.start = 0, 0, [], time.perf_counter()

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reset()

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: list[tuple[Item, np.ndarray | None]],
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        for item, mask in prediction:
            if item.skipped:
                self.skipped += 1
            elif mask is None:
                self.failed.append({"path": item.path, "reason": item.error})
                print(f"warning: skipped {item.path}: {item.error}", file=sys.stderr, flush=True)
            else:
                if self.render is not None:
                    write_image(self.files.overlay(item.name), self.render(item.image, mask))
                write_mask(self.files.mask(item.name), mask, self.palette)  # last: its presence marks the image done
                self.written += 1

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        seconds = time.perf_counter() - self.start
        rank = trainer.global_rank
        mine = {"rank": rank, "written": self.written, "skipped": self.skipped, "failed": self.failed}
        work = self.files.root / WORK_FOLDER
        _write_json(work / f"rank-{rank}.json", {**mine, "seconds": seconds})
        trainer.strategy.barrier("zoo-predict-counts")
        if trainer.is_global_zero:
            self.summary = _merge(work, trainer.world_size)
            _write_json(self.files.root / "summary.json", self.summary)


def _write_json(path: Path, data: Any) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(data, indent=2).encode("utf-8")))


def _merge(work: Path, world_size: int) -> dict[str, Any]:
    """The run's summary from every process's counts (the files are then removed, with the listing)."""
    ranks = [json.loads((work / f"rank-{r}.json").read_text()) for r in range(world_size)]
    meta = json.loads((work / "listing.json").read_text())
    seconds = max(r["seconds"] for r in ranks)
    written = sum(r["written"] for r in ranks)
    failed = [f for r in ranks for f in r["failed"]]
    summary = {
        "images": meta["count"],
        "written": written,
        "skipped": sum(r["skipped"] for r in ranks),
        "failed": len(failed),
        "seconds": seconds,
        "images_per_second": written / max(seconds, 1e-9),
        "processes": world_size,
        "per_rank": [{k: (len(v) if k == "failed" else v) for k, v in r.items()} for r in ranks],
        "failures": failed,
    }
    for r in range(world_size):
        (work / f"rank-{r}.json").unlink()
    for name in ("listing.tsv", "listing.json"):
        (work / name).unlink(missing_ok=True)
    work.rmdir()
    return summary


class ListingData(pl.LightningDataModule):
    """The predict loader: global rank 0 lists the input once; each process reads its shard of the listing.

    Args:
        source: a folder tree, a ``.txt``/``.lst`` file of paths, an image or a glob (see :func:`list_inputs`).
        files: where the outputs go (images with outputs are skipped unless ``files.overwrite``).
        naming: one name per image of a folder.
        batch_size: images per batch.
        num_workers: DataLoader worker processes that decode the images (0: the main process).
    """

    def __init__(
        self, source: str | Path, files: PredictionFiles, naming: Naming, batch_size: int = 1, num_workers: int = 0
    ) -> None:
        super().__init__()
        self.prepare_data_per_node = False  # one listing for the whole run, on global rank 0
        self.source, self.files, self.naming = source, files, naming
        self.batch_size, self.num_workers = batch_size, num_workers
        self.listing = files.root / WORK_FOLDER / "listing.tsv"

    def prepare_data(self) -> None:
        start = time.perf_counter()
        count = write_listing(self.source, self.listing, self.naming)
        meta = {"count": count, "seconds": time.perf_counter() - start}
        _write_json(self.listing.with_suffix(".json"), meta)

    def predict_dataloader(self) -> DataLoader:
        count = json.loads(self.listing.with_suffix(".json").read_text())["count"]
        world, rank = self.trainer.world_size, self.trainer.global_rank
        shards = ImageShards(
            self.listing, count, batch_size=self.batch_size, rank=rank, world_size=world, done=self.files.done
        )
        return DataLoader(shards, batch_size=None, num_workers=self.num_workers, collate_fn=_as_list)


class UnpaddedData(pl.LightningDataModule):
    """The test loader of a map-style dataset: each process a disjoint share, no repeats to fill the last shard.

    Args:
        dataset: items ``dict(image, mask, name)`` (uint8 image, train-id mask).
        num_workers: DataLoader worker processes that read the items.
    """

    def __init__(self, dataset: Any, num_workers: int = 0) -> None:
        super().__init__()
        self.dataset, self.num_workers = dataset, num_workers

    def test_dataloader(self) -> DataLoader:
        world, rank = self.trainer.world_size, self.trainer.global_rank
        sampler = UnrepeatedDistributedSampler(self.dataset, num_replicas=world, rank=rank, shuffle=False)
        return DataLoader(self.dataset, sampler=sampler, num_workers=self.num_workers, collate_fn=_as_list)


def _trainer(trainer_kwargs: Mapping[str, Any] | None, callbacks: list[Any]) -> pl.Trainer:
    options = {"logger": False, "enable_checkpointing": False, "enable_model_summary": False, **(trainer_kwargs or {})}
    return pl.Trainer(callbacks=callbacks, use_distributed_sampler=False, **options)


@contextlib.contextmanager
def _expected_warnings_silenced() -> Iterator[None]:
    """Leave out :data:`EXPECTED_WARNINGS` while a run lasts; the process's own filters return afterwards."""
    with warnings.catch_warnings():
        for message in EXPECTED_WARNINGS:
            warnings.filterwarnings("ignore", message=f".*{message}")
        yield


def predict_to_folder(
    predictor: Predictor,
    source: str | Path,
    output: str | Path,
    *,
    palette: Sequence[Sequence[int]],
    render: Render | None = None,
    naming: Naming = stem_names,
    batch_size: int = 1,
    num_workers: int = 0,
    overwrite: bool = False,
    trainer_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Segment every image ``source`` names into ``output/pred`` and ``output/vis`` through ``Trainer.predict``.

    Every process of the run calls this function (a ``torchrun``/``srun`` task, or a process Lightning's DDP
    launched); each writes its own share of the images.

    Args:
        predictor: the predictor each process runs.
        source: a folder tree, a ``.txt``/``.lst`` file of paths, an image or a glob (:func:`list_inputs`).
        output: the output folder (``pred/``, ``vis/``, ``summary.json``).
        palette: RGB colour per class for the masks.
        render: the overlay of ``(image, mask)`` written to ``vis/`` (None: masks only).
        naming: one name per image of a folder (default: the stem).
        batch_size: images per batch.
        num_workers: DataLoader workers decoding images in each process.
        overwrite: redo images whose outputs exist (default: skip them, so a killed run resumes).
        trainer_kwargs: ``pytorch_lightning.Trainer`` arguments (``accelerator``, ``devices``, ``strategy``,
            ``num_nodes``...).

    Returns:
        The run's summary (also in ``output/summary.json``) in global rank 0, None in the other processes.
    """
    files = PredictionFiles(Path(output), overwrite=overwrite, overlays=render is not None)
    data = ListingData(source, files, naming, batch_size=batch_size, num_workers=num_workers)
    writer = MaskWriter(files, palette, render)
    with _expected_warnings_silenced():
        trainer = _trainer(trainer_kwargs, [writer])
        trainer.predict(PredictorModule(predictor), datamodule=data, return_predictions=False)
    return writer.summary


def evaluate_distributed(
    predictor: Predictor,
    dataset: Any,
    *,
    num_workers: int = 0,
    show: Callable[[dict[str, Any], np.ndarray], None] | None = None,
    trainer_kwargs: Mapping[str, Any] | None = None,
) -> SegmentationScores | None:
    """Scores of a predictor on a dataset through ``Trainer.test``, the confusion matrix summed over processes.

    Args:
        predictor: the predictor each process runs.
        dataset: items ``dict(image=H×W×3 uint8, mask=H×W train ids)`` (see :func:`zoo.infer.evaluate.evaluate`).
        num_workers: DataLoader workers reading items in each process.
        show: called with each item and its predicted mask.
        trainer_kwargs: ``pytorch_lightning.Trainer`` arguments.

    Returns:
        The scores in global rank 0, None in the other processes.

    Raises:
        ValueError: the dataset and the predictor disagree on the number of classes.
    """
    num_classes = int(getattr(dataset, "num_classes", predictor.num_classes))
    if num_classes != predictor.num_classes:
        raise ValueError(f"the dataset has {num_classes} classes, the checkpoint predicts {predictor.num_classes}")
    module = PredictorModule(predictor, ignore_index=getattr(dataset, "ignore_index", IGNORE_INDEX), show=show)
    with _expected_warnings_silenced():
        trainer = _trainer(trainer_kwargs, [])
        trainer.test(module, datamodule=UnpaddedData(dataset, num_workers), verbose=False)
    return module.scores if trainer.is_global_zero else None


__all__ = [
    "ListingData",
    "MaskWriter",
    "PredictionFiles",
    "PredictorModule",
    "UnpaddedData",
    "evaluate_distributed",
    "predict_to_folder",
]
