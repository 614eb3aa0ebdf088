"""Figures of evaluation results and ablation studies (matplotlib, Agg backend), colour overlays of predictions."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _check_names(count: int, class_names: Sequence[str], what: str) -> list[str]:
    names = [str(c) for c in class_names]
    if len(names) != count:
        raise ValueError(f"{what} has {count} classes but class_names has {len(names)} entries")
    return names


def plot_confusion_matrix(cm: np.ndarray, class_names: Sequence[str], path: str | Path) -> Path:
    """Save a confusion matrix as an image: each row (ground-truth class) normalised to sum to 1.

    Args:
        cm: ``C×C`` pixel counts, rows ground truth, columns prediction.
        class_names: the ``C`` class names.
        path: output image file (parent folders are created).
    """
    cm = np.asarray(cm, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"cm must be a square C×C matrix, got shape {cm.shape}")
    names = _check_names(len(cm), class_names, "cm")
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    plt = _pyplot()
    size = max(4.0, 0.45 * len(names) + 2.5)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the ground-truth class")
    ticks = np.arange(len(names))
    ax.set_xticks(ticks, names, rotation=90)
    ax.set_yticks(ticks, names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    if len(names) <= 30:
        for i, j in np.ndindex(norm.shape):
            if norm[i, j] >= 0.005:
                colour = "white" if norm[i, j] > 0.5 else "black"
                ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=6, color=colour)
    ax.set_title("Confusion matrix (row-normalised)")
    return _save(fig, plt, path)


def plot_class_iou(ious: np.ndarray, class_names: Sequence[str], path: str | Path) -> Path:
    """Save a horizontal bar chart of per-class IoU with the mean IoU as a line.

    Args:
        ious: ``C`` IoUs in 0..1; NaN for classes absent from ground truth and prediction (drawn as "n/a").
        class_names: the ``C`` class names.
        path: output image file (parent folders are created).
    """
    ious = np.asarray(ious, dtype=np.float64).reshape(-1)
    names = _check_names(len(ious), class_names, "ious")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, max(3.0, 0.3 * len(names) + 1.5)))
    positions = np.arange(len(names))
    ax.barh(positions, np.nan_to_num(ious, nan=0.0), color="tab:blue")
    for y, value in zip(positions, ious, strict=True):
        ax.text(
            min(value, 0.9) + 0.01 if value == value else 0.01,
            y,
            "n/a" if value != value else f"{value:.3f}",
            va="center",
            fontsize=7,
        )
    present = ious[~np.isnan(ious)]
    if present.size:
        miou = float(present.mean())
        ax.axvline(miou, color="tab:red", linestyle="--", label=f"mIoU {miou:.3f}")
        ax.legend(loc="lower right")
    ax.set_yticks(positions, names)
    ax.invert_yaxis()
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("IoU")
    ax.set_title("Per-class IoU")
    return _save(fig, plt, path)


def _save(fig, plt, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


OVERLAY_ROWS = 512
TITLE_HEIGHT = 24
MIN_PANEL_HEIGHT = 256
PANEL_TITLES = ("image", "truth", "prediction")


def overlay(image: np.ndarray, mask: np.ndarray, palette: Sequence[Sequence[int]], opacity: float = 0.5) -> np.ndarray:
    """Blend class colours over an image (``H×W×3`` uint8 RGB).

    Classes coloured black (VOC's and the shapes data's background) and ids without a palette colour (255 =
    ignore) are left as the image, so the background is not darkened.

    Args:
        image: ``H×W×3`` uint8 RGB.
        mask: ``H×W`` class ids.
        palette: one RGB colour per class id.
        opacity: weight of the class colour, 0 (image only) to 1 (colours only).
    """
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity!r}")
    if image.shape[:2] != mask.shape[:2]:
        raise ValueError(f"image {image.shape[:2]} and mask {mask.shape[:2]} differ in size")
    colours = np.asarray(palette, dtype=np.float32).reshape(-1, 3)
    out = np.empty_like(image, dtype=np.uint8)
    for top in range(0, image.shape[0], OVERLAY_ROWS):  # in bands of rows: a large photograph's float copies stay small
        rows = slice(top, top + OVERLAY_ROWS)
        ids = mask[rows].astype(np.int64)
        known = (ids >= 0) & (ids < len(colours))
        colour = colours[np.where(known, ids, 0)]
        known &= colour.any(axis=-1)
        blend = (1.0 - opacity) * image[rows].astype(np.float32) + opacity * colour
        out[rows] = np.where(known[..., None], blend, image[rows]).round().clip(0, 255).astype(np.uint8)
    return out


def legend(width: int, ids: Sequence[int], class_names: Sequence[str], palette: Sequence[Sequence[int]]) -> np.ndarray:
    """A white ``h×width×3`` band with a colour box and the name of each class in ``ids`` (OpenCV text).

    Args:
        width: the band's width (the image's).
        ids: class ids to list, in order.
        class_names: name per class id.
        palette: colour per class id.
    """
    font, scale, thickness, row = cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1, 16
    entries = [(str(class_names[i]), tuple(int(v) for v in palette[i])) for i in ids if 0 <= i < len(class_names)]
    widths = [cv2.getTextSize(name, font, scale, thickness)[0][0] + 24 for name, _ in entries]
    lines: list[list[int]] = [[]]
    for index, entry_width in enumerate(widths):
        used = sum(widths[j] for j in lines[-1])
        if lines[-1] and used + entry_width > width - 4:
            lines.append([])
        lines[-1].append(index)
    band = np.full((row * len(lines) + 4, width, 3), 255, np.uint8)
    for number, line in enumerate(lines):
        x, y = 4, number * row + 4
        for index in line:
            name, colour = entries[index]
            cv2.rectangle(band, (x, y + 2), (x + 10, y + 12), colour, -1)
            cv2.rectangle(band, (x, y + 2), (x + 10, y + 12), (0, 0, 0), 1)
            cv2.putText(band, name, (x + 14, y + 11), font, scale, (0, 0, 0), thickness, cv2.LINE_AA)
            x += widths[index]
    return band


def with_legend(
    image: np.ndarray,
    masks: np.ndarray | Sequence[np.ndarray],
    class_names: Sequence[str],
    palette: Sequence[Sequence[int]],
) -> np.ndarray:
    """``image`` (an overlay, a strip of panels) above a legend of the classes present in ``masks`` (one or several)."""
    masks = [masks] if isinstance(masks, np.ndarray) else masks
    present = sorted({int(i) for mask in masks for i in np.unique(mask) if 0 <= i < len(class_names)})
    return np.concatenate([image, legend(image.shape[1], present, class_names, palette)], axis=0)


def titled(panel: np.ndarray, title: str) -> np.ndarray:
    """``panel`` below a white band with ``title`` centred in it (OpenCV text)."""
    font, scale, thickness = cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1
    (text_width, _), _ = cv2.getTextSize(title, font, scale, thickness)
    band = np.full((TITLE_HEIGHT, panel.shape[1], 3), 255, np.uint8)
    x = max((panel.shape[1] - text_width) // 2, 2)
    cv2.putText(band, title, (x, TITLE_HEIGHT - 7), font, scale, (0, 0, 0), thickness, cv2.LINE_AA)
    return np.concatenate([band, panel], axis=0)


def enlarged(array: np.ndarray, min_height: int) -> np.ndarray:
    """``array`` (an image or a mask) scaled up by the smallest whole factor that makes it ``min_height`` tall,
    nearest-neighbour, so small images (the demo's) are readable and class edges stay sharp."""
    factor = -(-min_height // max(array.shape[0], 1))
    if factor <= 1:
        return array
    return np.repeat(np.repeat(array, factor, axis=0), factor, axis=1)


def panels(
    image: np.ndarray,
    masks: Sequence[np.ndarray],
    class_names: Sequence[str],
    palette: Sequence[Sequence[int]],
    *,
    opacity: float = 0.5,
    with_image: bool = True,
    legend: bool = True,
    titles: Sequence[str] | None = None,
    min_height: int = MIN_PANEL_HEIGHT,
) -> np.ndarray:
    """``image | overlay(mask) | ...`` side by side, above a legend of the classes present in any of the masks.

    ``zoo eval --show-dir`` and the demo both draw ``image | truth | prediction`` with :data:`PANEL_TITLES`.

    Args:
        image: ``H×W×3`` uint8 RGB.
        masks: ``H×W`` class-id masks (a ground truth, a prediction), one panel each.
        class_names: name per class id.
        palette: colour per class id.
        opacity: weight of the class colour in each overlay.
        with_image: start with the image itself.
        legend: add the legend band.
        titles: one title per panel (the image's first when ``with_image``), drawn above it; None: no titles.
        min_height: panels of a smaller image are scaled up (whole factors, nearest-neighbour) to at least this.
    """
    originals = [np.asarray(mask) for mask in masks]
    image = enlarged(image, min_height)
    drawn = [overlay(image, enlarged(mask, min_height), palette, opacity) for mask in originals]
    shown = [image, *drawn] if with_image else drawn
    if titles is not None:
        if len(titles) != len(shown):
            raise ValueError(f"titles: one per panel ({len(shown)}), got {len(titles)}")
        shown = [titled(panel, title) for panel, title in zip(shown, titles, strict=True)]
    strip = np.concatenate(shown, axis=1)
    return with_legend(strip, originals, class_names, palette) if legend else strip


def _by_variant(rows: Sequence[Mapping]) -> dict[str, dict[int, dict[int, Mapping]]]:
    """variant -> seed -> step -> row, variants in the order of their first row."""
    out: dict[str, dict[int, dict[int, Mapping]]] = {}
    for row in rows:
        out.setdefault(row["variant"], {}).setdefault(row["seed"], {})[row["step"]] = row
    return out


def plot_study_curves(
    rows: Sequence[Mapping],
    path: str | Path,
    title: str = "",
    panels: Mapping[str, Sequence[str]] | None = None,
) -> Path:
    """Validation mIoU against training steps, as the Xception paper's Fig. 9/10: per variant, the mean over seeds
    as a line and the range from the lowest to the highest seed as a band.

    Args:
        rows: ``zoo ablation`` rows (variant, seed, step, val_miou, ...).
        path: output image file (parent folders are created).
        title: figure title.
        panels: panel title -> the variants drawn in it (default: one panel with every variant).
    """
    curves = _by_variant(rows)
    panels = dict(panels) if panels else {"": list(curves)}
    plt = _pyplot()
    cols = min(len(panels), 2)
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(6 * cols, 3.8 * nrows), sharey=True, squeeze=False)
    colours = {v: f"C{i % 10}" for i, v in enumerate(curves)}
    for ax, (panel, variants) in zip(axes.flat, panels.items(), strict=False):
        for variant in variants:
            seeds = curves.get(variant, {})
            steps = sorted({step for by_step in seeds.values() for step in by_step})
            values = [[by_step[s]["val_miou"] for by_step in seeds.values() if s in by_step] for s in steps]
            if not steps:
                continue
            colour, label = colours[variant], f"{variant} ({len(seeds)} seeds)"
            ax.plot(steps, [np.mean(v) for v in values], marker="o", markersize=3, color=colour, label=label)
            ax.fill_between(steps, [min(v) for v in values], [max(v) for v in values], color=colour, alpha=0.15)
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel("training steps")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    for ax in axes[:, 0]:
        ax.set_ylabel("validation mIoU")
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    _suptitle(fig, title or "Validation mIoU (mean over seeds; band: lowest to highest seed)", fontsize=11)
    return _save(fig, plt, path)


def _suptitle(fig: Any, text: str, fontsize: float = 12) -> None:
    """A figure title wrapped to the figure's width (about 110 characters of 11-point text per 10 inches)."""
    width = max(20, int(fig.get_figwidth() * 110 / 10 * 11 / fontsize))
    fig.suptitle("\n".join(textwrap.wrap(text, width)), fontsize=fontsize)


def plot_study_cost(rows: Sequence[Mapping], path: str | Path, title: str = "") -> Path:
    """Final validation mIoU of each variant (mean over seeds, bars from the lowest to the highest seed) against
    its parameters and its MACs.

    Args:
        rows: ``zoo ablation`` rows (variant, seed, step, val_miou, params, macs, ...).
        path: output image file (parent folders are created).
        title: figure title.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for i, (variant, seeds) in enumerate(_by_variant(rows).items()):
        finals = [by_step[max(by_step)] for by_step in seeds.values()]
        mious = [r["val_miou"] for r in finals]
        mean = float(np.mean(mious))
        for ax, key in zip(axes, ("params", "macs"), strict=True):
            x = finals[0][key] / 1e6
            ax.errorbar(
                x, mean, yerr=[[mean - min(mious)], [max(mious) - mean]], fmt="o", capsize=3, color=f"C{i % 10}"
            )
            ax.annotate(variant, (x, mean), textcoords="offset points", xytext=(4, 4), fontsize=7)
    from matplotlib import ticker

    for ax, label in zip(axes, ("parameters (M)", "MMACs per image (training crop)"), strict=True):
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel(label)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("final validation mIoU")
    _suptitle(fig, title or "Final validation mIoU against cost (mean over seeds; bars: lowest to highest seed)")
    return _save(fig, plt, path)


__all__ = [
    "PANEL_TITLES",
    "enlarged",
    "legend",
    "overlay",
    "panels",
    "plot_class_iou",
    "plot_confusion_matrix",
    "plot_study_cost",
    "plot_study_curves",
    "titled",
    "with_legend",
]
