"""Reading every item of a dataset split once, to find unreadable files and count pixels per class."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np


def check_split(dataset: Any) -> tuple[int, Counter, list[str]]:
    """Read every item of a built dataset.

    Args:
        dataset: a file-based zoo dataset without transform.

    Returns:
        (number of items, pixels per class id, one message per problem naming the file).
    """
    pixels: Counter = Counter()
    problems = []
    for index in range(len(dataset)):
        try:
            mask = dataset.load(index)["mask"]
        except (OSError, ValueError) as exc:
            problems.append(str(exc))
            continue
        ids, counts = np.unique(mask, return_counts=True)
        pixels.update(dict(zip(ids.tolist(), counts.tolist(), strict=True)))
    return len(dataset), pixels, problems


__all__ = ["check_split"]
