"""Rows of the TF-to-zoo variable tables: (zoo key, TF variable, transform of the TF value)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from zoo.convert.deeplab_tf import Checkpoint

BN_NAMES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
Transform = Callable[[np.ndarray], np.ndarray]
Row = tuple[str, str, Transform]
# Optimizer slots and counters: in training checkpoints, never part of the model.
SLOT_SUFFIXES = ("/Momentum", "/ExponentialMovingAverage", "/Adam", "/Adam_1", "/RMSProp", "/RMSProp_1")


def _conv(w: np.ndarray) -> np.ndarray:
    return w.transpose(3, 2, 0, 1)  # HWIO -> OIHW


def _depthwise(w: np.ndarray) -> np.ndarray:
    return w.transpose(2, 3, 0, 1)  # H, W, C, multiplier 1 -> C, 1, H, W


def _vector(w: np.ndarray) -> np.ndarray:
    return w


def _pool_last(w: np.ndarray, branches: int) -> np.ndarray:
    """ASPP projection: TF concatenates [image pooling, aspp0, aspp1, ...], the zoo [aspp0, ..., image pooling]."""
    chunks = np.split(_conv(w), branches, axis=1)
    return np.concatenate([*chunks[1:], chunks[0]], axis=1)


def _bn(zoo: str, tf_scope: str) -> list[Row]:
    return [(f"{zoo}.{p}", f"{tf_scope}/BatchNorm/{t}", _vector) for p, t in BN_NAMES.items()]


def _conv_bn(zoo: str, tf_scope: str) -> list[Row]:
    return [(f"{zoo}.conv.weight", f"{tf_scope}/weights", _conv), *_bn(f"{zoo}.bn", tf_scope)]


def _separable(zoo: str, tf_scope: str) -> list[Row]:
    """A zoo SeparableConvBNAct and TF's split_separable_conv2d (``{scope}_depthwise``, ``{scope}_pointwise``)."""
    return [
        (f"{zoo}.depthwise.conv.weight", f"{tf_scope}_depthwise/depthwise_weights", _depthwise),
        *_bn(f"{zoo}.depthwise.bn", f"{tf_scope}_depthwise"),
        *_conv_bn(f"{zoo}.pointwise", f"{tf_scope}_pointwise"),
    ]


def _model_variables(shapes: dict[str, tuple[int, ...]]) -> list[str]:
    return sorted(k for k in shapes if k != "global_step" and not k.endswith(SLOT_SUFFIXES))


def fill(
    state: dict[str, torch.Tensor], table: list[Row], ckpt: Checkpoint
) -> tuple[dict[str, torch.Tensor], set[str]]:
    """``state`` with its tensors read from ``ckpt`` by ``table``, and the TF variables read.

    Rows whose zoo key the model lacks are skipped (e.g. shortcuts of identity units); every tensor of the
    parts the table covers (the encoder; the decoder too for a checkpoint with a head) must have a row.

    Raises:
        ValueError: naming the first variable that is missing or whose shape does not fit.
    """
    rows = [row for row in table if row[0] in state]
    parts = tuple({key.split(".")[0] + "." for key, _, _ in rows})  # encoder., and decoder. with a head
    mapped = {key for key, _, _ in rows}
    unmapped = [k for k in state if k.startswith(parts) and not k.endswith("num_batches_tracked") and k not in mapped]
    if unmapped:
        raise ValueError(f"no TF variable maps to the zoo's {unmapped[0]}")  # a defect of the tables, not of the file
    out = dict(state)
    for key, name, transform in rows:
        if name not in ckpt.shapes:
            raise ValueError(f"{ckpt.source}: variable {name} is missing (the zoo's {key})")
        value = transform(ckpt.get(name))
        if tuple(value.shape) != tuple(state[key].shape):
            raise ValueError(
                f"{ckpt.source}: variable {name} has shape {list(ckpt.shapes[name])}, which does not fit the zoo's "
                f"{key} {list(state[key].shape)}"
            )
        out[key] = torch.from_numpy(np.ascontiguousarray(value))
    return out, {name for _, name, _ in rows}
