"""The LightningDataModule: datasets by registry name, albumentations pipelines and loaders.

Before training, every listed image and mask of the train and val splits is read once (a problem names the file),
and a train split without one full batch is an error. The training order and augmentations depend only on the seed
and the position in training (:mod:`zoo.data.sampler`), so a run resumed from a checkpoint sees the same batches as
an uninterrupted one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from zoo.data import DATASETS, build_dataset
from zoo.data.check import check_split, convention_problems
from zoo.data.io import IGNORE_INDEX, voc_palette
from zoo.data.sampler import ResumableSampler, SeededDraws
from zoo.data.transforms import PadCollate, eval_transform, seed_worker, train_transform
from zoo.registry import PreparableDataset

_CLASS_KWARGS = {"classes", "class_names", "classes_file", "palette"}  # dataset arguments that change the classes


class SegmentationDataModule(pl.LightningDataModule):
    """Datasets, augmentation pipelines and loaders.

    Args:
        dataset: registry name (``zoo.list_datasets()``): voc, cityscapes, folder, shapes, shapes-hard, shapes-voc.
        root: dataset folder (None for the in-memory ``shapes`` and ``shapes-hard``).
        train_split: split used for training.
        val_split: split used for validation.
        test_split: split used by ``test`` (default: ``val_split``).
        crop_size: training crop, an int or (height, width).
        scale: random scale range of training images.
        hflip: random horizontal flips in training.
        batch_size: training batch size (per process).
        val_batch_size: validation/test batch size; images keep their size, a batch is padded to its largest one.
        num_workers: dataloader worker processes.
        dataset_kwargs: extra arguments of the dataset constructor (e.g. ``num_images`` and ``size`` for shapes).
        prepare: for a dataset that writes its own files (a :class:`zoo.registry.PreparableDataset`, e.g.
            ``shapes-voc``): the arguments of its ``prepare(root, **prepare)`` (shapes-voc: num_train, num_val, seed,
            size), which ``prepare_data`` calls to write the data into ``root`` when missing; only into a new or
            empty folder or one the zoo wrote (a root holding other files is an error, checked here, and is left
            untouched).
        check_data: before ``fit`` and ``validate``, read every image and mask of the splits they use once (open,
            sizes agree, mask values in range) and fail naming every bad file.
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
        dataset_kwargs: dict[str, Any] | None = None,
        prepare: dict[str, Any] | None = None,
        check_data: bool = True,
    ) -> None:
        super().__init__()
        cls = DATASETS.get(dataset)  # an unknown name raises KeyError listing the valid ones
        if prepare is not None:
            check_prepare(dataset, cls, root, prepare)
        self.save_hyperparameters()
        self.datasets: dict[str, Any] = {}
        self._info: dict[str, Any] | None = None
        self._seed = 0

    # ------------------------------------------------------ classes and colours
    def _dataset_info(self) -> dict[str, Any]:
        """Class names and palette, read without building the split when the dataset class states them."""
        if self._info is None:
            hp = self.hparams
            cls = DATASETS.get(hp.dataset)
            fixed = isinstance(getattr(cls, "classes", None), list) and not _CLASS_KWARGS & set(hp.dataset_kwargs or {})
            if fixed and (hp.prepare is not None or hp.root is None or not Path(hp.root).exists()):
                source = cls  # the class's own list, without files (when only parsing a config, or before prepare)
            else:
                source = self.build_split(hp.val_split)  # a root may hold its own classes.txt
            classes, palette = list(source.classes), list(getattr(source, "palette", None) or [])
            palette = [tuple(int(v) for v in c) for c in palette] or voc_palette(len(classes))
            self._info = {"classes": classes, "palette": palette}
        return self._info

    @property
    def ignore_index(self) -> int:
        """The mask value left out of the loss and the metrics (``dataset_kwargs.ignore_index``, default 255)."""
        return int((self.hparams.dataset_kwargs or {}).get("ignore_index", IGNORE_INDEX))

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
    def prepare_data(self) -> None:
        """Write the dataset's files into ``root`` when ``prepare`` is set and they are missing (Lightning calls this
        once per machine, before ``setup``)."""
        hp = self.hparams
        if hp.prepare is not None:
            DATASETS.get(hp.dataset).prepare(hp.root, **hp.prepare)

    def build_split(self, split: str, transform: Any = None) -> Any:
        """The dataset of one split, built from this module's dataset name, root and dataset_kwargs."""
        hp = self.hparams
        kwargs = dict(hp.dataset_kwargs or {})
        if hp.root is not None:
            kwargs["root"] = hp.root
        return build_dataset(hp.dataset, split=split, transform=transform, **kwargs)

    def setup(self, stage: str) -> None:
        hp = self.hparams
        if stage == "fit" and "train" not in self.datasets:
            self._seed = int(torch.randint(0, 2**31 - 1, ()).item())  # from the global seed
            transform = train_transform(
                hp.crop_size, scale=tuple(hp.scale), hflip=hp.hflip, seed=self._seed, ignore_index=self.ignore_index
            )
            self.datasets["train"] = self._checked(hp.train_split, self.build_split(hp.train_split, transform))
            self._check_batch_size(hp.train_split, len(self.datasets["train"]))
        if stage in ("fit", "validate") and "val" not in self.datasets:
            self.datasets["val"] = self._checked(hp.val_split, self.build_split(hp.val_split, eval_transform()))
        if stage == "test" and "test" not in self.datasets:
            self.datasets["test"] = self.build_split(hp.test_split or hp.val_split, eval_transform())

    def _checked(self, split: str, dataset: Any) -> Any:
        """``dataset`` after reading each of its files once (``check_data``); raises naming every bad file."""
        if not self.hparams.check_data:
            return dataset
        _, pixels, problems = check_split(dataset, workers=max(2, self.hparams.num_workers))
        if problems:
            shown = "; ".join(problems[:5]) + (f"; ... ({len(problems)} in all)" if len(problems) > 5 else "")
            raise ValueError(f"{self.hparams.dataset} split {split!r}: {len(problems)} bad item(s): {shown}")
        labelled = {v for v, n in pixels.items() if n and v != self.ignore_index}
        if split == self.hparams.train_split and len(dataset.classes) > 1 and labelled <= {0}:
            # only class 0 and "ignore" in the whole split (0/255 binary masks): nothing but class 0 would train
            problem = next(
                iter(convention_problems(pixels, list(dataset.classes), self.ignore_index, share=0.0)),
                (f"only class 0 ({dataset.classes[0]!r}) occurs in the masks; check the mask files or mask_values"),
            )
            raise ValueError(f"{self.hparams.dataset} split {split!r}: {problem} (data.dataset_kwargs.mask_values)")
        return dataset

    def _processes(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def _check_batch_size(self, split: str, size: int) -> None:
        world, _ = self._processes()
        if size < self.hparams.batch_size * world:
            raise ValueError(
                f"train split {split!r} has {size} images, fewer than data.batch_size {self.hparams.batch_size} "
                f"x {world} process(es): no full training batch (the last incomplete batch is dropped)"
            )

    def _loader(self, dataset: Any, batch_size: int, **kwargs: Any) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=workers,
            worker_init_fn=seed_worker if workers > 0 else None,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
            generator=torch.Generator().manual_seed(self._seed),  # worker seeds, not the global random state
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled full batches, continuing from the trainer's step when a run resumes."""
        trainer = self.trainer
        start = trainer.global_step * trainer.accumulate_grad_batches if trainer is not None else 0
        world, rank = self._processes()
        dataset, batch_size = self.datasets["train"], self.hparams.batch_size
        sampler = ResumableSampler(len(dataset), batch_size, self._seed, start, num_replicas=world, rank=rank)
        return self._loader(SeededDraws(dataset, self._seed), batch_size, sampler=sampler, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        """Full-resolution images; batches of different sizes are padded (:class:`~zoo.data.transforms.PadCollate`)."""
        return self._loader(self.datasets["val"], self.hparams.val_batch_size, collate_fn=PadCollate(self.ignore_index))

    def test_dataloader(self) -> DataLoader:
        return self._loader(
            self.datasets["test"], self.hparams.val_batch_size, collate_fn=PadCollate(self.ignore_index)
        )


def check_prepare(dataset: str, cls: Any, root: str | None, prepare: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming ``data.prepare`` when ``dataset`` cannot write its files into ``root`` with these
    arguments (no ``prepare``, no root, a folder of other files, an argument it does not take); writes nothing."""
    if not isinstance(cls, PreparableDataset):
        able = [name for name in DATASETS.names() if isinstance(DATASETS.get(name), PreparableDataset)]
        raise ValueError(
            f"data.prepare: dataset {dataset!r} does not write its own data; datasets that do: {', '.join(able)}"
        )
    if root is None:
        raise ValueError(f"data.prepare needs data.root: the folder to write the {dataset} data to")
    try:
        cls.prepare(root, dry_run=True, **prepare)
    except (TypeError, ValueError) as error:
        raise ValueError(f"data.prepare: {error}") from None


__all__ = ["SegmentationDataModule", "check_prepare"]
