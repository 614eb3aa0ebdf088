"""A training order that depends only on the seed and the position in training, so a resumed run sees what an
uninterrupted run would have seen.

:class:`ResumableSampler` draws each epoch's permutation from ``(seed, epoch)`` and starts at any batch; every key
it yields is ``(draw, index)``, where ``draw`` numbers the item draws since the start of training.
:class:`SeededDraws` reads such keys and seeds the augmentation pipeline from ``(seed, draw)`` before each item,
so augmentations depend neither on the number of workers nor on where a run was interrupted.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from zoo.data.transforms import _transforms_of


def _seed(*values: int) -> int:
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1)[0])


class ResumableSampler(DistributedSampler):
    """Shuffled full batches of one process, resumable at any batch.

    It is a ``DistributedSampler`` so that Lightning keeps it under DDP (it shards by rank itself). Each iteration
    runs from ``start`` to the end of that epoch; the next one starts the following epoch. Lightning's
    ``set_epoch`` calls are ignored: the position alone decides the order.

    Args:
        size: number of items of the dataset.
        batch_size: items per batch (per process); the last incomplete batch of an epoch is dropped.
        seed: seed of the permutations.
        start: batches of this process already consumed since the start of training (the resume point).
        num_replicas: number of processes.
        rank: this process's rank.
    """

    def __init__(
        self, size: int, batch_size: int, seed: int = 0, start: int = 0, num_replicas: int = 1, rank: int = 0
    ) -> None:
        super().__init__(range(size), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.size, self.batch_size, self.start = size, batch_size, start
        self.batches_per_epoch = size // (batch_size * num_replicas)
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"{size} items make no full batch of {batch_size} per process on {num_replicas} process(es)"
            )

    def __len__(self) -> int:
        return self.batches_per_epoch * self.batch_size

    def set_epoch(self, epoch: int) -> None:
        """Ignored: the order follows the position in training (``start``), not Lightning's epoch counter."""

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, first = divmod(self.start, self.batches_per_epoch)
        self.start = (epoch + 1) * self.batches_per_epoch
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(_seed(self.seed, epoch)))
        per_epoch = self.batches_per_epoch * self.batch_size * self.num_replicas
        for position in range(first * self.batch_size, self.batches_per_epoch * self.batch_size):
            shared = position * self.num_replicas + self.rank  # position in the permutation, over all processes
            yield epoch * per_epoch + shared, int(order[shared])


class SeededDraws(Dataset):
    """A dataset read with ``(draw, index)`` keys; its augmentation is seeded from ``(seed, draw)`` for each item.

    Args:
        dataset: a zoo dataset with an albumentations ``transform``.
        seed: augmentation seed.
    """

    def __init__(self, dataset: Any, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        draw, index = key
        for transform in _transforms_of(self.dataset):
            if hasattr(transform, "set_random_seed"):
                transform.set_random_seed(_seed(self.seed, draw))
        return self.dataset[index]


__all__ = ["ResumableSampler", "SeededDraws"]
