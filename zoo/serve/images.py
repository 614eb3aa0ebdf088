"""Images in and out of the server: decoding uploaded bytes with limits, encoding masks and overlays as PNG.

Uploaded bytes are data from anyone, so :func:`decode_image` checks the header's size before decoding a pixel
(a 40000x40000 PNG of a few hundred bytes would need gigabytes), and turns every reason it cannot read them into
:class:`BadImage` with an HTTP status and one line for the client. The conversion to RGB is the zoo's own
(:func:`zoo.data.io.image_to_rgb`, as ``zoo predict`` reads files); overlays and legends are :mod:`zoo.viz`'s.
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from zoo.data.io import image_to_rgb
from zoo.viz import overlay, with_legend

DEFAULT_MAX_PIXELS = 6000 * 6000


class BadImage(ValueError):
    """Bytes that are not an image the server can read.

    Args:
        status: the HTTP status to answer (400, or 415 for something that is not an image at all).
        reason: one line for the client.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an uploaded image file to H×W×3 uint8 RGB (EXIF orientation applied).

    Args:
        data: the file's bytes.
        max_pixels: the largest width × height accepted (checked from the header, before decoding).

    Raises:
        BadImage: empty (400), not an image (415), too many pixels (400), truncated or corrupt (400).
    """
    if not data:
        raise BadImage(400, "empty body: send an image file (PNG, JPEG, BMP, TIFF, WebP)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        raise BadImage(400, f"image too large: over the limit of {max_pixels} pixels ({error})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise BadImage(415, "not an image: send a PNG, JPEG, BMP, TIFF or WebP file") from None
    width, height = img.size
    if width * height > max_pixels:
        raise BadImage(400, f"image too large: {width}x{height} pixels is over the limit of {max_pixels} pixels")
    if width == 0 or height == 0:
        raise BadImage(400, f"image has no pixels ({width}x{height})")
    try:
        img.load()
        return image_to_rgb(ImageOps.exif_transpose(img))
    except (OSError, SyntaxError, ValueError, struct.error) as error:
        raise BadImage(400, f"truncated or corrupt {img.format or ''} image ({error})".replace("  ", " ")) from None


def png_bytes(array: np.ndarray, palette: Sequence[Sequence[int]] | None = None) -> bytes:
    """PNG file bytes of an RGB image, or of a class mask as a palette PNG (the classes' colours) when ``palette``."""
    if palette is None:
        img = Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8), "RGB")
    elif array.max(initial=0) > 255:
        img = Image.fromarray(array.astype(np.int32), "I")
    else:
        img = Image.fromarray(array.astype(np.uint8), "P")
        img.putpalette([int(v) for colour in palette for v in colour][:768])
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def overlay_png(
    image: np.ndarray,
    mask: np.ndarray,
    class_names: Sequence[str],
    palette: Sequence[Sequence[int]],
    opacity: float = 0.5,
) -> bytes:
    """The classes' colours over ``image`` above a legend of the classes present, as PNG bytes."""
    return png_bytes(with_legend(overlay(image, mask, palette, opacity), mask, class_names, palette))


__all__ = ["DEFAULT_MAX_PIXELS", "BadImage", "decode_image", "overlay_png", "png_bytes"]
