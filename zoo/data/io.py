"""Reading images and label masks, writing palette masks, and the shared base of the file-based datasets.

Images are read with PIL (EXIF orientation applied) and always returned as H×W×3 uint8 RGB: grayscale,
palette, RGBA (alpha dropped), CMYK and 16-bit images are converted. Masks are read with PIL too: a palette
(mode ``P``) PNG gives its palette indices, never the colours OpenCV would return. A mask that holds colours
(RGB with unequal channels) or values outside ``{0..C-1, 255}`` (a colour or interpolated mask) is an error
that names the file; nothing is resized, remapped or dropped silently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset

from zoo.fileio import atomic_write

IGNORE_INDEX = 255

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


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as H×W×3 uint8 RGB.

    EXIF orientation is applied. Grayscale, palette, RGBA (alpha dropped), CMYK and 16-bit images are
    converted to 8-bit RGB (16-bit values divided by 257, so 65535 maps to 255).

    Args:
        path: image file.

    Raises:
        FileNotFoundError: the file does not exist (the message names it).
        ValueError: the file is truncated, corrupt or not an image (the message names it).
    """
    path = Path(path)
    img = _open(path, "image")
    values = _high_bit_depth(img)
    if values is not None:
        gray = np.clip(np.round(values.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8).copy()


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


def check_mask_values(mask: np.ndarray, num_classes: int, path: str | Path, ignore_index: int = IGNORE_INDEX) -> None:
    """Raise if ``mask`` holds values outside ``{0..num_classes-1, ignore_index}`` (a colour or interpolated mask).

    Args:
        mask: H×W class ids.
        num_classes: number of classes.
        path: the mask's file, named in the error.
        ignore_index: the ignore value.
    """
    values = np.unique(mask)
    bad = values[(values >= num_classes) & (values != ignore_index)]
    if bad.size:
        shown = ", ".join(str(v) for v in bad[:10]) + (", ..." if bad.size > 10 else "")
        raise ValueError(
            f"mask {path}: values {shown} outside {{0..{num_classes - 1}, {ignore_index}}} ({num_classes} classes); "
            "a colour or interpolated (resized) mask, or one that needs mask_values / reduce_zero_label?"
        )


def remap_labels(
    mask: np.ndarray,
    mask_values: dict[int, int] | None = None,
    reduce_zero_label: bool = False,
    ignore_index: int = IGNORE_INDEX,
) -> np.ndarray:
    """Stored mask values to class ids: ``mask_values`` first (e.g. ``{255: 1}`` for 0/255 binary masks), then
    MMSegmentation's ``reduce_zero_label`` (0 becomes ``ignore_index``, every other id ``v`` becomes ``v - 1``).

    Args:
        mask: H×W stored values (uint8).
        mask_values: stored value -> class id (or ``ignore_index``); values not listed stay as they are.
        reduce_zero_label: label 0 is "unlabelled" (ADE20K's convention).
        ignore_index: the ignore value.
    """
    if mask_values:
        lut = np.arange(256, dtype=np.int64)
        for source, target in mask_values.items():
            lut[int(source)] = int(target)
        mask = lut[mask]
    if reduce_zero_label:
        mask = np.where(mask == 0, ignore_index, np.where(mask == ignore_index, ignore_index, mask - 1))
    return mask.astype(np.uint8) if mask.max(initial=0) < 256 else mask


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


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Convert an ``H×W`` / ``H×W×1`` / ``H×W×3`` / ``H×W×4`` array (uint8, uint16 or float in 0..1) to uint8 RGB.

    Args:
        image: the array; an alpha channel is dropped, 16-bit values are scaled to 8 bits.
    """
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] in (1, 3, 4):
        array = array[..., :3] if array.shape[2] != 1 else array[..., 0]
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 RGB image (or gray/RGBA), got shape {array.shape}")
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype == np.uint16:
        return (array.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        return (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)
    raise ValueError(f"unsupported image dtype {array.dtype} (expected uint8, uint16 or float in 0..1)")


def read_lines(path: Path, what: str) -> list[str]:
    """Non-empty stripped lines of a text file; a missing or empty file is an error naming it.

    Args:
        path: text file.
        what: what the file holds, for the messages ("split list", "class list").
    """
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    lines = [line.strip() for line in path.read_text().splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise ValueError(f"{what} {path} is empty")
    return lines


def require_dir(path: Path, what: str) -> Path:
    """Return ``path`` if it is a folder, else raise FileNotFoundError naming it and ``what`` it should hold."""
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


class SegmentationFiles(Dataset):
    """Base of the file-based datasets: a list of ``(name, image file, mask file)`` read on access.

    Every listed file must exist when the dataset is built (the error names the first missing one). Reading an
    item maps the stored mask values to class ids (``mask_values``, ``reduce_zero_label``) and checks that image
    and mask have the same size and that the mask values lie in ``{0..C-1, ignore_index}``.

    Args:
        samples: ``(name, image path, mask path)`` per item, in order.
        classes: class names (train id order).
        palette: RGB colour per class.
        transform: albumentations Compose (or a callable taking ``image=``, ``mask=`` and returning a dict).
        source: what the list came from, named in the error when it is empty.
        ignore_index: the mask value left out of training and evaluation.
        reduce_zero_label: stored label 0 means "unlabelled" (becomes ``ignore_index``; other ids shift down by 1).
        mask_values: stored mask value -> class id, e.g. ``{255: 1}`` for binary masks stored as 0/255.
    """

    def __init__(
        self,
        samples: Sequence[tuple[str, Path, Path]],
        classes: Sequence[str],
        palette: Sequence[Sequence[int]],
        transform: Callable[..., dict[str, Any]] | None = None,
        source: str = "",
        ignore_index: int = IGNORE_INDEX,
        reduce_zero_label: bool = False,
        mask_values: dict[int, int] | None = None,
    ) -> None:
        if not samples:
            raise ValueError(f"{type(self).__name__}: no images in {source}")
        if len(palette) != len(classes):
            raise ValueError(f"palette has {len(palette)} colours for {len(classes)} classes")
        for _, image_path, mask_path in samples:
            for path, what in ((image_path, "image"), (mask_path, "mask")):
                if not Path(path).is_file():
                    raise FileNotFoundError(f"{what} file not found: {path} (listed in {source})")
        self.samples = [(name, Path(image), Path(mask)) for name, image, mask in samples]
        self.classes = list(classes)
        self.palette = [tuple(int(v) for v in colour) for colour in palette]
        self.num_classes = len(self.classes)
        self.transform = transform
        self.ignore_index = int(ignore_index)
        self.reduce_zero_label = bool(reduce_zero_label)
        self.mask_values = {int(k): int(v) for k, v in (mask_values or {}).items()}

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def names(self) -> list[str]:
        """Item names (ids), in order."""
        return [name for name, _, _ in self.samples]

    def load_mask(self, path: Path) -> np.ndarray:
        """Train ids of one mask file (subclasses map dataset-specific label ids here)."""
        return read_mask(path)

    def load(self, index: int) -> dict[str, Any]:
        """Image, mask and name of item ``index``, checked, without the transform."""
        name, image_path, mask_path = self.samples[index]
        image = read_image(image_path)
        mask = remap_labels(self.load_mask(mask_path), self.mask_values, self.reduce_zero_label, self.ignore_index)
        if image.shape[:2] != mask.shape:
            raise ValueError(
                f"image {image_path} is {image.shape[1]}x{image.shape[0]} but mask {mask_path} is "
                f"{mask.shape[1]}x{mask.shape[0]} (width x height)"
            )
        check_mask_values(mask, self.num_classes, mask_path, self.ignore_index)
        return {"image": image, "mask": mask, "name": name}

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        item = self.load(index)
        if self.transform is not None:
            out = self.transform(image=item["image"], mask=item["mask"])
            item["image"], item["mask"] = out["image"], torch.as_tensor(out["mask"]).long()
        return item


def resolve_classes(
    classes: Sequence[str] | None,
    palette: Sequence[Sequence[int]] | None,
    classes_file: Path,
    default: Sequence[str] | None,
) -> tuple[list[str], list[tuple[int, int, int]]]:
    """Class names and palette: ``classes`` if given, else ``classes_file`` if present, else ``default``.

    Args:
        classes: class names given by the caller.
        palette: colours given by the caller (default: the VOC colour map).
        classes_file: text file with one class name per line.
        default: class names when neither is given (None: one of them is required).
    """
    if classes is not None:
        names = list(classes)
    elif classes_file.is_file():
        names = read_lines(classes_file, "class list")
    elif default is not None:
        names = list(default)
    else:
        raise FileNotFoundError(f"no class list: pass classes=[...] or write one name per line to {classes_file}")
    if not names:
        raise ValueError("classes is empty")
    if len(names) > 255:
        raise ValueError(f"{len(names)} classes do not fit uint8 masks with 255 = ignore")
    if palette is None:
        colours = voc_palette(len(names))
    else:
        colours = [tuple(int(v) for v in c) for c in palette]
        if len(colours) != len(names):
            raise ValueError(f"palette has {len(colours)} colours for {len(names)} classes")
    return names, colours


__all__ = [
    "IGNORE_INDEX",
    "VOC_CLASSES",
    "SegmentationFiles",
    "check_mask_values",
    "read_image",
    "read_mask",
    "remap_labels",
    "resolve_classes",
    "voc_colormap",
    "voc_palette",
    "write_mask",
]
