"""``shapes-hard`` (``HardShapesDataset``) is the variant on which architectures differ: eight shape classes whose
colour and texture say little about the class, occlusion, background clutter, blur and noise; deterministic
in the same way.
"""

from __future__ import annotations

import cv2
import numpy as np

from zoo.data.shapes import SHAPES_CLASSES, SHAPES_PALETTE, SPLITS, ShapesDataset, draw_background, polygon_points

HARD_CLASSES: tuple[str, ...] = (*SHAPES_CLASSES, "hexagon", "cross", "ring", "ellipse")
HARD_PALETTE: tuple[tuple[int, int, int], ...] = (
    *SHAPES_PALETTE,
    (128, 0, 128),
    (0, 128, 128),
    (128, 128, 128),
    (64, 0, 0),
)
# base colour of each class, jittered by +-70 per channel: a hint that overlaps between classes, not a label
HARD_FILL = {1: (220, 60, 50), 2: (60, 190, 70), 3: (60, 90, 220), 4: (230, 200, 40), 5: (200, 60, 200),
             6: (40, 200, 200), 7: (240, 140, 40), 8: (140, 140, 140)}  # fmt: skip
HARD_STREAM = 1  # a random stream apart from the easy variant's: rng((seed, split, index, HARD_STREAM))


def _texture(rng: np.random.Generator, size: int, base: tuple[int, int, int]) -> np.ndarray:
    """A texture (float32 size×size×3) in ``base`` jittered and a random colour: flat, stripes, checks or blotches."""
    a = np.clip(np.array(base) + rng.uniform(-70, 70, size=3), 0, 255).astype(np.float32)
    b = rng.uniform(0, 255, size=3).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    kind = int(rng.integers(4))
    if kind == 0:
        t = np.zeros((size, size), np.float32)
    elif kind == 1:
        angle, period = rng.uniform(0, np.pi), rng.uniform(4, 14)
        t = (np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period) > 0).astype(np.float32)
    elif kind == 2:
        cell = rng.uniform(3, 10)
        t = ((np.floor(xx / cell) + np.floor(yy / cell)) % 2).astype(np.float32)
    else:
        t = cv2.resize(rng.uniform(0, 1, size=(6, 6)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    return a + (b - a) * t[..., None]


def _cross(cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    w = 0.35 * r
    arm = [(w, r), (w, w), (r, w), (r, -w), (w, -w), (w, -r), (-w, -r), (-w, -w), (-r, -w), (-r, w), (-w, w), (-w, r)]
    c, s = np.cos(angle), np.sin(angle)
    return np.round(np.array(arm) @ np.array([[c, s], [-s, c]]) + (cx, cy)).astype(np.int32)


def _hard_region(kind: int, cx: float, cy: float, r: float, rng: np.random.Generator, size: int) -> np.ndarray:
    """The boolean mask of one shape of class ``kind`` (a class of :data:`HARD_CLASSES`)."""
    region, centre, angle = np.zeros((size, size), np.uint8), (round(cx), round(cy)), rng.uniform(0, 2 * np.pi)
    name = HARD_CLASSES[kind]
    if name in ("circle", "ring"):
        cv2.circle(region, centre, round(r), 1, thickness=-1)
        if name == "ring":
            cv2.circle(region, centre, round(r * rng.uniform(0.45, 0.6)), 0, thickness=-1)
    elif name == "ellipse":
        axes = (round(r * 1.2), round(r * rng.uniform(0.45, 0.6)))
        cv2.ellipse(region, centre, axes, float(np.degrees(angle)), 0, 360, 1, thickness=-1)
    elif name == "hexagon":
        t = angle + np.arange(6) * np.pi / 3
        cv2.fillPoly(region, [np.round(np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)).astype(np.int32)], 1)
    elif name == "cross":
        cv2.fillPoly(region, [_cross(cx, cy, r, angle)], 1)
    else:
        cv2.fillPoly(region, [polygon_points(kind, cx, cy, r, angle)], 1)
    return region.astype(bool)


def _clutter(image: np.ndarray, rng: np.random.Generator) -> None:
    """Lines and small blobs of random colours, drawn in place; they belong to the background."""
    size = image.shape[0]
    for _ in range(rng.integers(3, 9)):
        colour = rng.uniform(0, 255, size=3).tolist()
        p, q = (tuple(int(v) for v in rng.integers(0, size, size=2)) for _ in range(2))
        if rng.random() < 0.5:
            cv2.line(image, p, q, colour, int(rng.integers(1, 4)))
        else:
            cv2.circle(image, p, int(rng.integers(2, 5)), colour, thickness=-1)


def make_hard_shapes_item(seed: int, split: str, index: int, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """Draw one image of ``shapes-hard`` and its mask.

    Eight shape classes whose colour and texture say nothing about the class (each shape gets a random two-colour
    texture: flat, stripes, checks or blotches), 2 to 5 shapes that occlude one another, background clutter (lines
    and blobs of random colours), blur and noise. Arguments and returns as :func:`make_shapes_item`.
    """
    if split not in SPLITS:
        raise ValueError(f"shapes-hard: unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    if size < 32:
        raise ValueError(f"shapes-hard: size must be at least 32 pixels, got {size}")
    rng = np.random.default_rng((seed, SPLITS[split], index, HARD_STREAM))
    image = draw_background(rng, size)
    _clutter(image, rng)
    mask = np.zeros((size, size), np.uint8)
    for _ in range(rng.integers(2, 6)):  # later shapes occlude earlier ones
        kind = int(rng.integers(1, len(HARD_CLASSES)))
        r = rng.uniform(0.11, 0.22) * size
        cx, cy = rng.uniform(0.5 * r, size - 0.5 * r, size=2)
        inside = _hard_region(kind, cx, cy, r, rng, size)
        image[inside] = _texture(rng, size, HARD_FILL[kind])[inside]
        mask[inside] = kind
    outline = cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    image = cv2.GaussianBlur(image, (3, 3), rng.uniform(0.3, 1.0))
    image += rng.normal(0, rng.uniform(6, 16), size=image.shape)
    mask[outline] = 255
    return np.clip(image, 0, 255).astype(np.uint8), mask


class HardShapesDataset(ShapesDataset):
    """``shapes-hard``: eight shape classes, random textures, occlusion and clutter, drawn in memory.

    Made for ablation studies (``zoo ablation``), where ``shapes`` is solved by almost any variant within a few
    hundred steps. Deterministic per seed, split and index, like ``shapes``.

    Args:
        root: must be None (the data is drawn in memory).
        split: "train", "val" or "test".
        transform: albumentations Compose (or callable taking ``image=``, ``mask=``) applied to each item.
        num_images: number of items (default 200 for train, 40 for val and test).
        size: image height and width in pixels (default 96).
        seed: data seed; the same seed, split and index always give the same item.
    """

    default_size: int = 96
    classes: list[str] = list(HARD_CLASSES)
    palette: list[tuple[int, int, int]] = list(HARD_PALETTE)
    num_classes: int = len(HARD_CLASSES)

    def _draw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return make_hard_shapes_item(self.seed, self.split, index, self.size)


__all__ = ["HARD_CLASSES", "HARD_PALETTE", "HardShapesDataset", "make_hard_shapes_item"]
