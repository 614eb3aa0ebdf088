"""Where the time goes: OpenVINO's per-operator profile of a DeepLab model, grouped into the parts of the network.

OpenVINO's CPU plug-in times every executed node when compiled with ``PERF_COUNT`` (its documented per-layer
profiling, ``InferRequest.get_profiling_info``). Node names come from the ONNX graph, whose names are the torch
module paths (``/module/encoder/blocks.7/convs.1/conv_pw/Conv``), so each node is put in a bucket by the module it
came from (:func:`bucket_of`): the input normalisation (the model's own ops before the encoder), the entry flow
(stem and the strided units before the first identity-residual unit), the middle and exit flows' depthwise convs
(dilated or not), their pointwise convs (1x1 shortcuts included), the rest of those units (ReLU, residual adds,
layout reorders), the ASPP, the decoder (low-level projection, refinement, classifier and its 4x upsampling), and
the final bilinear upsampling of the logits to the input size together with the reorder of the output to NCHW.
The argmax runs after the engine, in torch; :func:`time_argmax` times it on the engine's logits.

The units whose feature tap the decoder reads run through ``forward_with_tap``, outside the module call that names
the scope, so their nodes lose the ``blocks.N`` part (``/module/encoder/convs.1/conv_pw_2``): the exporter numbers
repeated names in call order (no suffix, ``_1``, ``_2``, ...), which :func:`bucket_of` maps back to the tapped
units in order.
"""

from __future__ import annotations

import re
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

BUCKETS = (
    "input normalisation (+ pad to the size divisor)",
    "entry flow (stem + strided units)",
    "middle/exit depthwise 3x3, dilated",
    "middle/exit depthwise 3x3, not dilated",
    "middle/exit pointwise 1x1 (+ shortcuts)",
    "middle/exit other (ReLU, adds, reorders)",
    "ASPP",
    "decoder (low-level, refine, classifier, 4x upsampling)",
    "final bilinear upsampling to input size + output reorder",
    "other",
)
_NORMALISATION_TYPES = ("Parameter", "MulAdd", "Subtract", "Multiply", "Divide", "Add", "FakeQuantize")
_BLOCK = re.compile(r"/encoder/blocks\.(\d+)/")


@dataclass(frozen=True)
class UnitInfo:
    """One encoder unit: its flow ("entry", "middle" or "exit") and whether its depthwise convs are dilated."""

    flow: str
    dilated: bool


def encoder_units(model: nn.Module) -> tuple[dict[int, UnitInfo], list[int]]:
    """Each unit of an aligned-Xception encoder (by index) and the indices of the units read as feature taps.

    The middle flow is the run of units with an identity residual (no 1x1 shortcut); units before it are the entry
    flow, after it the exit flow.
    """
    blocks = list(model.encoder.blocks)
    middle = [i for i, b in enumerate(blocks) if getattr(b, "residual", False) and b.shortcut is None]
    first, last = (middle[0], middle[-1]) if middle else (len(blocks), len(blocks) - 1)
    units = {}
    for i, block in enumerate(blocks):
        flow = "entry" if i < first else "middle" if i <= last else "exit"
        dilated = any(c.conv_dw.dilation != (1, 1) for c in block.convs)
        units[i] = UnitInfo(flow, dilated)
    taps = list(getattr(model.encoder, "_taps", []))  # the units run through forward_with_tap, in call order
    return units, taps


def _unit_index(name: str, taps: Sequence[int]) -> int | None:
    match = _BLOCK.search(name)
    if match:
        return int(match[1])
    tail = name.split("/encoder/", 1)[1] if "/encoder/" in name else ""
    if not tail or tail.startswith("stem/") or not taps:
        return None
    parts = tail.split("/")
    leaf = parts[1] if parts[0].startswith(("convs.", "shortcut")) and len(parts) > 1 else parts[0]
    suffix = re.search(r"_(\d+)$", leaf)
    order = int(suffix[1]) if suffix else 0
    if leaf.startswith("Relu"):  # three pre-activation ReLUs per unit
        order //= 3
    return taps[order] if order < len(taps) else None


def bucket_of(name: str, node_type: str, units: dict[int, UnitInfo], taps: Sequence[int]) -> str:
    """The bucket (one of :data:`BUCKETS`) of the profiled node ``name`` of type ``node_type``."""
    if name.startswith("output_") or "/module/Resize" in name:
        return BUCKETS[8]
    if "/decoder/aspp/" in name:
        return BUCKETS[6]
    if "/decoder/" in name:
        return BUCKETS[7]
    if "/encoder/stem/" in name:
        return BUCKETS[1]
    if "/encoder/" in name:
        index = _unit_index(name, taps)
        unit = units.get(index) if index is not None else None
        if unit is None:
            return BUCKETS[9]
        if unit.flow == "entry":
            return BUCKETS[1]
        if node_type == "GroupConvolution" or "conv_dw" in name:
            return BUCKETS[2] if unit.dilated else BUCKETS[3]
        if node_type == "Convolution":
            return BUCKETS[4]
        return BUCKETS[5]
    if name.startswith("/module/") or node_type in _NORMALISATION_TYPES:  # the model's own ops before the encoder
        return BUCKETS[0]
    return BUCKETS[9]


def profile_openvino(compiled: Any, x: torch.Tensor, runs: int) -> tuple[dict[tuple[str, str], float], list[float]]:
    """Each node's median time (ms) over ``runs`` inferences of a model compiled with ``PERF_COUNT``, and each
    run's wall time (ms)."""
    request = compiled.create_infer_request()
    array = x.detach().cpu().float().contiguous().numpy()
    request.infer({0: array})  # the first run allocates
    per_node: dict[tuple[str, str], list[float]] = defaultdict(list)
    walls = []
    for _ in range(runs):
        start = time.perf_counter()
        request.infer({0: array})
        walls.append((time.perf_counter() - start) * 1e3)
        for info in request.get_profiling_info():
            per_node[(info.node_name, info.node_type)].append(info.real_time.total_seconds() * 1e3)
    return {key: statistics.median(values) for key, values in per_node.items()}, walls


def split(node_ms: dict[tuple[str, str], float], model: nn.Module) -> dict[str, float]:
    """The nodes' times summed per bucket (ms), in :data:`BUCKETS` order."""
    units, taps = encoder_units(model)
    totals: Counter[str] = Counter({bucket: 0.0 for bucket in BUCKETS})
    for (name, node_type), ms in node_ms.items():
        totals[bucket_of(name, node_type, units, taps)] += ms
    return {bucket: totals[bucket] for bucket in BUCKETS}


def time_argmax(logits: torch.Tensor, runs: int) -> float:
    """Median time (ms) of ``logits.argmax(1)`` in torch, the step after the engine."""
    times = []
    for _ in range(runs + 1):
        start = time.perf_counter()
        logits.argmax(1)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times[1:])


def markdown_split(columns: dict[str, dict[str, float]], walls: dict[str, float]) -> str:
    """The splits (one column per engine label: bucket -> ms, plus "argmax (torch)") as a markdown table of ms and
    shares of each column's total, with each engine's median wall time."""
    labels = list(columns)
    head = "| part of the network | " + " | ".join(f"{label} ms | share" for label in labels) + " |"
    lines = [head, "|---|" + "---|---|" * len(labels)]
    totals = {label: sum(col.values()) for label, col in columns.items()}
    names = list(dict.fromkeys(name for col in columns.values() for name in col))
    for name in names:
        cells = []
        for label in labels:
            ms = columns[label].get(name, 0.0)
            cells.append(f"{ms:.1f} | {100 * ms / totals[label]:.1f}%")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| **sum of the nodes + argmax** | " + " | ".join(f"{totals[la]:.1f} | 100%" for la in labels) + " |")
    lines.append("| wall time of one inference (median) | " + " | ".join(f"{walls[la]:.1f} | " for la in labels) + " |")
    return "\n".join(lines)


__all__ = [
    "BUCKETS",
    "UnitInfo",
    "bucket_of",
    "encoder_units",
    "markdown_split",
    "profile_openvino",
    "split",
    "time_argmax",
]
