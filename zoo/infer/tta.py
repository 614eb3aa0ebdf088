"""Test-time inference: sliding window, multi-scale and horizontal-flip averaging of logits.

``infer_logits(model, images, scales=..., flip=..., slide=...)`` is the one inference routine used by
``zoo predict``, ``zoo eval`` and ``SegmentationModule.test_step``. For every scale the batch is resized
(bilinear), cut into windows (or kept whole), run through the model together with its mirror image when
``flip`` is set, and the logits are put back: overlapping windows are averaged with a count map, mirrored
logits are flipped back, and every scale's logits are resized to the input size and averaged. This is the
DeepLab evaluation protocol (e.g. scales 0.5..1.75 with flip), averaging logits rather than softmax scores.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

Slide = tuple[tuple[int, int], tuple[int, int]]
DEEPLAB_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
# TF DeepLab's eval crop per dataset (``eval.py --eval_crop_size`` in its published instructions): every image is
# padded at the bottom and right to it (mean pixel; ignore label in the mask) before the forward pass.
DEEPLAB_TF_EVAL_CROP = {"voc": (513, 513), "cityscapes": (1025, 2049)}


def window_starts(size: int, crop: int, stride: int) -> list[int]:
    """Start offsets of windows of length ``crop`` moved by ``stride`` that cover ``size`` (last one flush).

    Args:
        size: length to cover.
        crop: window length (a window never extends past ``size``; when ``crop >= size`` one window covers all).
        stride: step between windows.
    """
    if crop >= size:
        return [0]
    count = math.ceil((size - crop) / stride) + 1
    return sorted({min(i * stride, size - crop) for i in range(count)})


def pad_to_size(images: torch.Tensor, size: tuple[int, int], value: Sequence[float]) -> torch.Tensor:
    """Pad ``N×C×H×W`` images at the bottom and right to at least ``size`` with one value per channel.

    A side already as long as ``size`` or longer is left as it is (TF DeepLab's ``pad_to_bounding_box`` at
    offset 0 to ``max(size, image)``).

    Args:
        images: the batch.
        size: (height, width) to pad to.
        value: the fill value of each channel (e.g. the model's mean colour, which normalises to zero).
    """
    height, width = images.shape[-2:]
    target = (max(height, int(size[0])), max(width, int(size[1])))
    if target == (height, width):
        return images
    if len(value) != images.shape[1]:
        raise ValueError(f"pad value needs one number per channel ({images.shape[1]}), got {list(value)}")
    fill = torch.tensor([float(v) for v in value], dtype=images.dtype, device=images.device)
    padded = fill.view(1, -1, 1, 1).repeat(images.shape[0], 1, *target)
    padded[..., :height, :width] = images
    return padded


def _check_slide(slide: Slide | None) -> Slide | None:
    if slide is None:
        return None
    try:
        (crop_h, crop_w), (stride_h, stride_w) = slide
        values = tuple(int(v) for v in (crop_h, crop_w, stride_h, stride_w))
    except (TypeError, ValueError):
        raise ValueError(f"slide must be ((crop_h, crop_w), (stride_h, stride_w)), got {slide!r}") from None
    if min(values) < 1:
        raise ValueError(f"slide crop and stride must be positive, got {slide!r}")
    if values[2] > values[0] or values[3] > values[1]:
        raise ValueError(f"slide stride must not exceed the crop (windows would leave gaps), got {slide!r}")
    return (values[0], values[1]), (values[2], values[3])


def _run(model: Callable, x: torch.Tensor, flip: bool, batch_size: int | None) -> torch.Tensor:
    """The model's logits for ``x``, averaged with the flipped-back logits of ``x`` mirrored when ``flip``."""
    inputs = torch.cat([x, x.flip(-1)]) if flip else x
    step = batch_size or len(inputs)
    outs = []
    for start in range(0, len(inputs), step):
        outs.append(model(inputs[start : start + step]).float())
    logits = torch.cat(outs)
    if flip:
        n = len(x)
        logits = (logits[:n] + logits[n:].flip(-1)) / 2
    if logits.shape[-2:] != x.shape[-2:]:
        raise ValueError(
            f"the model returned logits of size {tuple(logits.shape[-2:])}, expected {tuple(x.shape[-2:])}"
        )
    return logits


def _slide(model: Callable, x: torch.Tensor, slide: Slide, flip: bool, batch_size: int | None) -> torch.Tensor:
    """Logits of ``x`` from overlapping windows, averaged where they overlap (count map)."""
    (crop_h, crop_w), (stride_h, stride_w) = slide
    height, width = x.shape[-2:]
    boxes = [
        (top, left, min(top + crop_h, height), min(left + crop_w, width))
        for top in window_starts(height, crop_h, stride_h)
        for left in window_starts(width, crop_w, stride_w)
    ]
    if len(boxes) == 1:
        return _run(model, x, flip, batch_size)
    # All windows have the same size, so the windows of every image in the batch run together.
    crops = torch.cat([x[..., t:b, l:r] for t, l, b, r in boxes])
    logits = _run(model, crops, flip, batch_size).split(len(x))
    total = x.new_zeros((len(x), logits[0].shape[1], height, width), dtype=torch.float32)
    count = x.new_zeros((1, 1, height, width), dtype=torch.float32)
    for (t, l, b, r), window in zip(boxes, logits, strict=True):
        total[..., t:b, l:r] += window
        count[..., t:b, l:r] += 1
    return total / count


@torch.no_grad()
def infer_logits(
    model: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    *,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    slide: Slide | None = None,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Logits ``N×C×H×W`` of a batch, averaged over scales, flips and overlapping windows.

    Args:
        model: a segmentation model in eval mode (or any callable) mapping ``N×3×h×w`` images to logits
            ``N×C×h×w``.
        images: ``N×3×H×W`` RGB images in 0..1.
        scales: the image is resized (bilinear) by each factor, and each scale's logits are resized back to
            ``H×W`` and averaged. DeepLab's multi-scale test uses :data:`DEEPLAB_SCALES`.
        flip: also run the horizontally mirrored images and average their flipped-back logits.
        slide: ``((crop_h, crop_w), (stride_h, stride_w))``: run windows of at most that size moved by that
            stride (the last one flush with the border) at each scale and average where they overlap; None runs
            the whole image.
        batch_size: most images (or windows) per model call; None runs all of them at once.

    Raises:
        ValueError: bad ``images`` shape, ``scales``, ``slide`` or ``batch_size``.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be an N×3×H×W batch, got shape {tuple(images.shape)}")
    scales = tuple(float(s) for s in scales)
    if not scales or min(scales) <= 0:
        raise ValueError(f"scales must be positive numbers, got {scales!r}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size!r}")
    slide = _check_slide(slide)
    height, width = images.shape[-2:]
    total = None
    for scale in scales:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        x = (
            images
            if size == (height, width)
            else F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        )
        logits = _run(model, x, flip, batch_size) if slide is None else _slide(model, x, slide, flip, batch_size)
        if size != (height, width):
            logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        total = logits if total is None else total + logits
    return total / len(scales)


__all__ = ["DEEPLAB_SCALES", "DEEPLAB_TF_EVAL_CROP", "infer_logits", "pad_to_size", "window_starts"]
