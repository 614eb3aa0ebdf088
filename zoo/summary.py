"""Parameters and multiply-adds of encoders and of encoder × decoder models.

Multiply-adds are counted by ``torch.utils.flop_counter`` (see :mod:`zoo.flops`) on one ``size``×``size`` image,
in eval mode, and reported as GMACs (10^9 multiply-accumulates, i.e. half of the FLOPs PyTorch counts).
Models are built on PyTorch's ``meta`` device where possible, so counting needs no real computation.

Examples::

    zoo summary encoders --size 512
    zoo summary models --size 512 --output-stride 16 --markdown
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from zoo.decoders import list_decoders
from zoo.encoders import build_encoder, list_encoders
from zoo.errors import ArgumentError
from zoo.flops import count_macs, count_params
from zoo.models import build_model


@dataclass(frozen=True)
class Row:
    """One table row: leading text cells, then parameters and MACs."""

    cells: tuple[str, ...]
    params: int
    macs: int


def _on_meta_if_possible(build: Callable[[torch.device], nn.Module]) -> tuple[nn.Module, torch.device]:
    """Build on the meta device (no memory, no compute); fall back to the CPU for modules that refuse."""
    try:
        with torch.device("meta"):
            return build(torch.device("meta")), torch.device("meta")
    except (NotImplementedError, RuntimeError, TypeError, ValueError):
        return build(torch.device("cpu")), torch.device("cpu")


def _measure(module: nn.Module, device: torch.device, size: tuple[int, int]) -> tuple[int, int]:
    x = torch.zeros(1, 3, *size, device=device)
    return count_params(module), count_macs(module, x)


def encoder_rows(
    encoders: Sequence[str], size: tuple[int, int], output_stride: int, encoder_kwargs: dict[str, Any]
) -> list[Row]:
    """One row per encoder: name, tap reductions, deepest channels, parameters, MACs.

    Args:
        encoders: encoder names.
        size: input height and width.
        output_stride: the encoders' output stride.
        encoder_kwargs: extra arguments for every zoo Xception (ignored by encoders that do not take them).
    """
    rows = []
    for name in encoders:
        kwargs = _kwargs_for(name, encoder_kwargs)
        encoder, device = _on_meta_if_possible(
            lambda d, n=name, k=kwargs: build_encoder(n, output_stride=output_stride, **k)
        )
        params, macs = _measure(encoder, device, size)
        reductions = "/".join(str(f.reduction) for f in encoder.feature_info)
        rows.append(Row((name, reductions, str(encoder.feature_info[-1].channels)), params, macs))
    return rows


def model_rows(
    encoders: Sequence[str],
    decoders: Sequence[str],
    size: tuple[int, int],
    output_stride: int,
    num_classes: int,
    encoder_kwargs: dict[str, Any],
) -> list[Row]:
    """One row per encoder × decoder pair: names, output stride, parameters, MACs.

    Args:
        encoders: encoder names.
        decoders: decoder names.
        size: input height and width.
        output_stride: the encoders' output stride.
        num_classes: classes of the models.
        encoder_kwargs: extra arguments for every zoo Xception.
    """
    rows = []
    for enc in encoders:
        kwargs = _kwargs_for(enc, encoder_kwargs)
        for dec in decoders:

            def build(device: torch.device, e: str = enc, d: str = dec, k: dict = kwargs) -> nn.Module:
                return build_model(e, d, num_classes=num_classes, output_stride=output_stride, encoder_kwargs=k)

            model, device = _on_meta_if_possible(build)
            params, macs = _measure(model, device, size)
            rows.append(Row((enc, dec, str(output_stride)), params, macs))
    return rows


def _kwargs_for(name: str, encoder_kwargs: dict[str, Any]) -> dict[str, Any]:
    """``encoder_kwargs`` apply to the zoo's own encoders only (external ones take no width)."""
    return dict(encoder_kwargs) if name in ZOO_ENCODERS else {}


ZOO_ENCODERS = ("xception41", "xception65", "xception71", "xception")


def default_encoders() -> list[str]:
    """The zoo's Xceptions (those registered) and two external encoders for comparison."""
    registered = list_encoders()
    names = [n for n in ZOO_ENCODERS if n in registered]
    return names + [n for n in ("resnet50", "mobilenet_v2") if n not in names]


def render(rows: list[Row], headers: Sequence[str], title: str, markdown: bool) -> str | None:
    """Print ``rows`` as a rich table, or return them as a markdown table when ``markdown``."""
    all_headers = [*headers, "Params (M)", "GMACs"]
    body = [[*r.cells, f"{r.params / 1e6:.2f}", f"{r.macs / 1e9:.2f}"] for r in rows]
    if markdown:
        right = len(headers)
        align = ["---" if i < right else "---:" for i in range(len(all_headers))]
        lines = ["| " + " | ".join(all_headers) + " |", "| " + " | ".join(align) + " |"]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    table = Table(title=title)
    for i, header in enumerate(all_headers):
        table.add_column(header, justify="right" if i >= len(headers) else "left")
    for cells in body:
        table.add_row(*cells)
    Console().print(table)
    return None


def summarize(
    what: str,
    *,
    size: tuple[int, int] = (512, 512),
    output_stride: int | None = None,
    encoders: Sequence[str] | None = None,
    decoders: Sequence[str] | None = None,
    num_classes: int = 21,
    encoder_kwargs: dict[str, Any] | None = None,
    markdown: bool = False,
) -> None:
    """Print the table of encoders (``what="encoders"``) or of encoder × decoder models (``what="models"``).

    Args:
        what: "encoders" or "models".
        size: input height and width.
        output_stride: the encoders' output stride (default: 32 for encoders, 16 for models).
        encoders: encoder names (default: :func:`default_encoders`).
        decoders: decoder names (default: every registered decoder).
        num_classes: classes of the models.
        encoder_kwargs: extra arguments for the zoo's Xceptions (e.g. ``{"width": 0.25}``).
        markdown: print a markdown table instead of a rich table.

    Raises:
        ArgumentError: naming ``what`` or ``num_classes``; KeyError: an unknown encoder or decoder.
    """
    if what not in ("encoders", "models"):
        raise ArgumentError("what", f"must be 'encoders' or 'models', got {what!r}")
    if num_classes < 1:
        raise ArgumentError("num_classes", f"must be positive, got {num_classes}")
    encoders = list(encoders or default_encoders())
    kwargs = dict(encoder_kwargs or {})
    size_text = f"{size[0]}x{size[1]}"
    if what == "encoders":
        stride = output_stride or 32
        rows = encoder_rows(encoders, size, stride, kwargs)
        headers: tuple[str, ...] = ("Encoder", "Tap reductions", "Deepest channels")
        title = f"Encoders at {size_text}, output stride {stride} (GMACs = 10^9 multiply-adds)"
    else:
        stride = output_stride or 16
        rows = model_rows(encoders, list(decoders or list_decoders()), size, stride, num_classes, kwargs)
        headers = ("Encoder", "Decoder", "OS")
        title = f"Models at {size_text}, {num_classes} classes (GMACs = 10^9 multiply-adds)"
    text = render(rows, headers, title, markdown)
    if text is not None:
        print(text)


__all__ = ["Row", "encoder_rows", "model_rows", "render", "summarize"]
