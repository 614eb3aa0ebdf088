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


def convention_problems(pixels: Counter, classes: list[str], ignore_index: int, share: float = 0.1) -> list[str]:
    """A split where a class never occurs while much of it is the ignore value: masks in another convention.

    The common case is a binary mask stored as 0/255: read as class 0 and "ignore", its foreground never trains.

    Args:
        pixels: pixels per stored value (from :func:`check_split`).
        classes: the class names.
        ignore_index: the ignore value.
        share: the ignore share above which an absent class is reported.
    """
    total = sum(pixels.values())
    absent = [name for i, name in enumerate(classes) if pixels.get(i, 0) == 0]
    ignored = pixels.get(ignore_index, 0) / total if total else 0.0
    if not absent or ignored <= share:
        return []
    value, target = binary_mask_values(len(classes), ignore_index)
    return [
        f"class {absent[0]!r} never occurs while {ignored:.0%} of the pixels are {ignore_index} (ignore): masks "
        f"stored in another convention? For 0/{ignore_index} binary masks use mask_values {{{value}: {target}}}"
    ]


def binary_mask_values(num_classes: int, ignore_index: int) -> tuple[int, str]:
    """The dataset's ``mask_values`` entry, (stored value, class id), that reads 0/``ignore_index`` binary masks as
    two classes: class 1 when there are two, else ``"ID"`` (the user's choice)."""
    return ignore_index, "1" if num_classes == 2 else "ID"


__all__ = ["binary_mask_values", "check_split", "convention_problems"]
