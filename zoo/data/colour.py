"""Colour (RGB) masks to class-index masks, the format every zoo dataset reads."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from zoo.data.cityscapes import CITYSCAPES_PALETTE
from zoo.data.files import read_lines
from zoo.data.io import IGNORE_INDEX, VOC_CLASSES, voc_palette

# colours a named palette draws for "ignore": VOC's object boundaries (stored as 255 in its index masks)
IGNORE_COLOURS: dict[str, list[tuple[int, int, int]]] = {"voc": [(224, 224, 192)]}


def named_palette(spec: str) -> list[tuple[int, int, int]]:
    """A palette by name (``voc``: 21 classes, ``cityscapes``: 19) or read from a file of ``R G B`` lines.

    Raises:
        FileNotFoundError: ``spec`` is neither a name nor a file.
        ValueError: a line of the file is not three integers in 0..255 (names the line).
    """
    if spec == "voc":
        return voc_palette(len(VOC_CLASSES))
    if spec == "cityscapes":
        return [tuple(c) for c in CITYSCAPES_PALETTE]
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"palette {spec!r}: neither voc, cityscapes nor a file of 'R G B' lines")
    colours = []
    for number, line in enumerate(read_lines(path, "palette"), start=1):
        values = line.replace(",", " ").split()
        if len(values) != 3 or not all(v.isdigit() and int(v) < 256 for v in values):
            raise ValueError(f"{path}:{number}: expected 'R G B' (0..255), got {line!r}")
        colours.append(tuple(int(v) for v in values))
    return colours


def colour_to_index(
    rgb: np.ndarray,
    palette: Sequence[Sequence[int]],
    unknown: int | None = None,
    where: str = "mask",
    ignore_colours: Sequence[Sequence[int]] = (),
) -> np.ndarray:
    """The class index of every pixel of an RGB mask whose colours are ``palette``'s.

    Args:
        rgb: H×W×3 uint8 colour mask.
        palette: one RGB colour per class, in class order.
        unknown: the index given to colours not in the palette (e.g. the ignore value 255); None: an error.
        where: the mask's name, for the error.
        ignore_colours: colours that mean "ignore" (``IGNORE_COLOURS["voc"]``: VOC's boundary colour), given
            the ignore value 255.

    Raises:
        ValueError: a colour is not in the palette (with ``unknown=None``), or the palette repeats a colour.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"{where}: expected an H×W×3 colour mask, got shape {rgb.shape}")
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    keys = [(int(r) << 16) | (int(g) << 8) | int(b) for r, g, b in palette]
    if len(set(keys)) != len(keys):
        raise ValueError("the palette gives two classes the same colour")
    lookup = dict(zip(keys, range(len(keys)), strict=True))
    for r, g, b in ignore_colours:
        lookup.setdefault((int(r) << 16) | (int(g) << 8) | int(b), IGNORE_INDEX)
    values, inverse = np.unique(codes, return_inverse=True)
    indices = np.array([lookup.get(int(v), -1) for v in values])
    missing = values[indices < 0]
    if missing.size and unknown is None:
        first = int(missing[0])
        colour = (first >> 16, (first >> 8) & 255, first & 255)
        raise ValueError(f"{where}: colour {colour} is not in the palette ({missing.size} unknown colours)")
    indices[indices < 0] = IGNORE_INDEX if unknown is None else unknown
    return indices[inverse].reshape(codes.shape).astype(np.uint8 if indices.max(initial=0) < 256 else np.int64)


__all__ = ["IGNORE_COLOURS", "colour_to_index", "named_palette"]
