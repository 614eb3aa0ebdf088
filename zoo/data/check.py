"""Reading every item of a dataset split once, to find unreadable files and count pixels per class."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np


def _check_item(dataset: Any, index: int) -> tuple[dict[int, int], str | None]:
    try:
        mask = dataset.load(index)["mask"]
    except (OSError, ValueError) as exc:
        return {}, str(exc)
    ids, counts = np.unique(mask, return_counts=True)
    return dict(zip(ids.tolist(), counts.tolist(), strict=True)), None


def check_split(dataset: Any, workers: int = 1) -> tuple[int, Counter, list[str]]:
    """Read every item of a built dataset: images and masks open, sizes agree, mask values are in range.

    Args:
        dataset: a file-based zoo dataset (with ``load(index)``), without transform.
        workers: threads reading files at once (image decoding releases the GIL).

    Returns:
        (number of items, pixels per class id, one message per problem naming the file).
    """
    pixels: Counter = Counter()
    problems = []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for counts, problem in pool.map(lambda i: _check_item(dataset, i), range(len(dataset))):
            pixels.update(counts)
            if problem is not None:
                problems.append(problem)
    return len(dataset), pixels, problems


__all__ = ["check_split"]
