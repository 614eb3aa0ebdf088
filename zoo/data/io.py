"""Reading images and label masks, writing palette masks and images (atomically), VOC's colour map.

Images are read with PIL (EXIF orientation applied) and always returned as H×W×3 uint8 RGB: grayscale,
palette, RGBA (alpha dropped), CMYK and 16-bit images are converted; a 16-bit PNG holding fewer significant bits
(12-bit camera or scanner data) is scaled by its own range (its ``sBIT`` chunk, else 12 bits when every value fits
in 0..4095), not by 65535. Which files count as images is decided here once (:data:`IMAGE_SUFFIXES`).

Masks are read with PIL too: a palette (mode ``P``) PNG gives its palette indices, never the colours OpenCV would
return; a mask that holds colours (RGB with unequal channels) is an error that names the file. The datasets' base
is in :mod:`zoo.data.files`.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from zoo.errors import ArgumentError
from zoo.fileio import atomic_write

IGNORE_INDEX = 255
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm")


def is_image_file(path: str | Path) -> bool:
    """Whether ``path`` is a file whose suffix is an image's (:data:`IMAGE_SUFFIXES`, any case)."""
    path = Path(path)
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def image_files(folder: str | Path, what: str = "folder") -> list[Path]:
    """The image files directly in ``folder``, sorted.

    Args:
        folder: the folder.
        what: how errors call the folder ("calibration folder", ...).

    Raises:
        FileNotFoundError: the folder does not exist or holds no images.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if is_image_file(p))
    if not files:
        raise FileNotFoundError(f"{what} {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


VOC_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


def voc_colormap(num_colors: int = 256) -> np.ndarray:
    """Pascal VOC's colour map: the bits of each label id spread over R, G and B.

    Args:
        num_colors: number of entries (256 for a full PNG palette; index 255 is (224, 224, 192)).

    Returns:
        ``num_colors``×3 uint8 array.
    """
    ids = np.arange(num_colors)
    cmap = np.zeros((num_colors, 3), np.int64)
    for shift in range(7, -1, -1):
        for channel in range(3):
            cmap[:, channel] |= ((ids >> (3 * (7 - shift) + channel)) & 1) << shift
    return cmap.astype(np.uint8)


def voc_palette(num_classes: int) -> list[tuple[int, int, int]]:
    """The first ``num_classes`` colours of the VOC colour map, as RGB tuples.

    Args:
        num_classes: number of classes.
    """
    return [tuple(int(v) for v in colour) for colour in voc_colormap(max(num_classes, 1))[:num_classes]]


def _open(path: Path, what: str) -> Image.Image:
    """Open and fully decode an image file with its EXIF orientation applied; errors name the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            return ImageOps.exif_transpose(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"cannot read {what} {path}: truncated, corrupt or not an image ({exc})") from None


def _high_bit_depth(img: Image.Image) -> np.ndarray | None:
    """Pixel values of a 16/32-bit integer or float single-channel image, else None."""
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        return np.asarray(img)
    return None


def _png_header(path: Path) -> tuple[int, int, int | None]:
    """A PNG's bit depth, colour type and significant bits (its ``sBIT`` chunk; None without one)."""
    with open(path, "rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            return 8, 0, None
        depth = colour = 0
        while True:
            head = f.read(8)
            if len(head) < 8:
                return depth, colour, None
            length, kind = struct.unpack(">I4s", head)
            body = f.read(length)
            f.read(4)  # CRC
            if kind == b"IHDR":
                depth, colour = body[8], body[9]
            elif kind == b"sBIT":
                return depth, colour, max(body[:3])
            elif kind == b"IDAT":
                return depth, colour, None


def _to_8_bits(values: np.ndarray, significant: int | None) -> np.ndarray:
    """16-bit samples to 8 bits, scaled by the range they use: ``significant`` bits, else 12 when they fit."""
    bits = significant or (12 if values.size and int(values.max()) <= 4095 else 16)
    return np.clip(np.round(values.astype(np.float64) * (255.0 / (2**bits - 1))), 0, 255).astype(np.uint8)


def _read_png16_colour(path: Path, significant: int | None) -> np.ndarray:
    """A 16-bit RGB(A) PNG (PIL keeps only the high bytes of those) through OpenCV."""
    values = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if values is None or values.ndim != 3:
        raise ValueError(f"cannot read image {path}: a corrupt 16-bit colour PNG")
    rgb = cv2.cvtColor(values[..., :3], cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(_to_8_bits(rgb, significant))


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as H×W×3 uint8 RGB.

    EXIF orientation is applied. Grayscale, palette, RGBA (alpha dropped), CMYK and 16-bit images are
    converted to 8-bit RGB; 16-bit values are scaled by the bits they use (a PNG's ``sBIT`` chunk; else 12 bits
    when every value fits in 0..4095, as 12-bit camera and scanner data stored in 16-bit PNGs; else 16 bits).

    Args:
        path: image file.

    Raises:
        FileNotFoundError: the file does not exist (the message names it).
        ValueError: the file is truncated, corrupt or not an image (the message names it).
    """
    path = Path(path)
    img = _open(path, "image")
    depth, colour, significant = _png_header(path)  # (8, 0, None) for anything but a PNG
    if depth == 16 and colour in (2, 6):
        return _read_png16_colour(path, significant)
    return image_to_rgb(img, significant)


def image_to_rgb(img: Image.Image, significant: int | None = None) -> np.ndarray:
    """A decoded PIL image as H×W×3 uint8 RGB, converted as :func:`read_image` describes.

    Args:
        img: a loaded PIL image (any mode; EXIF orientation is the caller's to apply).
        significant: the bits a 16-bit image uses (a PNG's ``sBIT``), or None to infer them from the values.
    """
    values = _high_bit_depth(img)
    if values is not None:
        gray = _to_8_bits(values, significant) if img.mode.startswith("I;16") else _clip_8_bits(values)
        return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8).copy()


def _clip_8_bits(values: np.ndarray) -> np.ndarray:
    """32-bit integer or float samples (PIL's ``I``/``F`` modes) divided by 257 as 16-bit ones."""
    return np.clip(np.round(values.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)


def read_mask(path: str | Path) -> np.ndarray:
    """Read a label mask as H×W uint8 class ids.

    Palette (``P``) PNGs give their palette indices; grayscale (``L``) masks their values; 16-bit masks are
    accepted when every value fits in 0..255; an RGB mask is accepted only when its three channels are equal
    (a grayscale mask stored as RGB).

    Args:
        path: mask file (PNG).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: corrupt file, a colour (RGB/RGBA) mask, or 16-bit values above 255; the message names the file.
    """
    path = Path(path)
    img = _open(path, "mask")
    values = _high_bit_depth(img)
    if values is not None:
        if values.size and (values.min() < 0 or values.max() > 255):
            raise ValueError(
                f"mask {path}: {img.mode} values range {values.min()}..{values.max()}, expected class ids in 0..255"
            )
        return values.astype(np.uint8)
    if img.mode in ("P", "L"):
        return np.asarray(img, dtype=np.uint8).copy()
    if img.mode == "1":
        return np.asarray(img.convert("L"), dtype=np.uint8).copy()
    if img.mode == "RGB":
        rgb = np.asarray(img)
        if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 0] == rgb[..., 2]).all():
            return rgb[..., 0].copy()
    raise ValueError(
        f"mask {path}: colour ({img.mode}) mask; expected class ids in a palette (P) or grayscale (L) PNG, "
        "convert the colours to class ids first"
    )


def write_mask(path: str | Path, mask: np.ndarray, palette: Sequence[Sequence[int]] | None = None) -> Path:
    """Write class ids as a palette (mode ``P``) PNG.

    Args:
        path: output file (``.png``); parent folders are created.
        mask: H×W integer class ids in 0..255.
        palette: RGB colour per class id; ids without a colour take the VOC colour map's (255 → (224, 224, 192)).

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"write_mask {path}: mask must be H×W, got shape {mask.shape}")
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise ValueError(f"write_mask {path}: values {mask.min()}..{mask.max()} do not fit a palette PNG (0..255)")
    colours = voc_colormap(256)
    if palette is not None:
        colours[: len(palette)] = np.asarray(palette, np.uint8).reshape(-1, 3)[:256]
    img = Image.fromarray(mask.astype(np.uint8), mode="P")
    img.putpalette(colours.reshape(-1).tolist())
    return atomic_write(path, lambda f: img.save(f, format="PNG"))


def write_image(path: str | Path, image: np.ndarray) -> Path:
    """Write an H×W×3 uint8 RGB image atomically; the format follows the suffix (PNG, JPEG, ...).

    Args:
        path: output file; parent folders are created.
        image: the image.
    """
    path = Path(path)
    img = Image.fromarray(to_rgb_uint8(image))
    file_format = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    return atomic_write(path, lambda f: img.save(f, format=file_format))


def to_rgb_uint8(image: np.ndarray, argument: str = "image") -> np.ndarray:
    """Convert an ``H×W`` / ``H×W×1`` / ``H×W×3`` / ``H×W×4`` array (uint8, uint16 or float in 0..1) to uint8 RGB.

    Args:
        image: the array; an alpha channel is dropped, 16-bit values are scaled to 8 bits. A float array must hold
            values in 0..1: one in 0..255 is refused rather than clipped (it would turn almost white).
        argument: the caller's name for ``image`` in errors.

    Raises:
        ArgumentError: another shape, another dtype, or float values outside 0..1.
    """
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] in (1, 3, 4):
        array = array[..., :3] if array.shape[2] != 1 else array[..., 0]
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ArgumentError(argument, f"expected an H×W×3 RGB image (or gray/RGBA), got shape {array.shape}")
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype == np.uint16:
        return (array.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
        if not (np.isfinite(low) and np.isfinite(high)) or low < -1e-3 or high > 1 + 1e-3:
            raise ArgumentError(
                argument,
                f"float values in [{low:.4g}, {high:.4g}]; give uint8 (0..255) or float in 0..1 "
                "(divide a float image in 0..255 by 255)",
            )
        return (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)
    raise ArgumentError(argument, f"dtype {array.dtype} is not an image's: give uint8 (0..255) or float in 0..1")


__all__ = [
    "IGNORE_INDEX",
    "IMAGE_SUFFIXES",
    "image_files",
    "is_image_file",
    "to_rgb_uint8",
    "VOC_CLASSES",
    "image_to_rgb",
    "read_image",
    "read_mask",
    "voc_colormap",
    "voc_palette",
    "write_mask",
]
