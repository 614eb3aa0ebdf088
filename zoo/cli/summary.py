"""``zoo summary``: parameters and GMACs of encoders or of encoder × decoder models (see :mod:`zoo.summary`)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from zoo.summary import summarize


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size must be N or HxW, got {text!r}") from None
    if len(values) not in (1, 2) or min(values) < 1:
        raise argparse.ArgumentTypeError(f"--size must be N or HxW with positive sizes, got {text!r}")
    return (values[0], values[-1])


def _json_dict(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"--encoder-kwargs must be a JSON object: {error}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"--encoder-kwargs must be a JSON object, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``zoo summary``."""
    parser.description = "Parameters and multiply-adds (GMACs, counted by torch.utils.flop_counter) at a given size."
    parser.add_argument("what", choices=("encoders", "models"), help="encoder table or encoder × decoder table")
    parser.add_argument("--size", type=_size, default=(512, 512), help="input size, N or HxW (default: 512)")
    parser.add_argument(
        "--output-stride", type=int, choices=(8, 16, 32), default=None, help="default: 32 for encoders, 16 for models"
    )
    parser.add_argument("--encoders", nargs="+", default=None, help="encoder names (default: the zoo's and two smp)")
    parser.add_argument("--decoders", nargs="+", default=None, help="decoder names (default: all)")
    parser.add_argument("--num-classes", type=int, default=21, help="classes of the models (default: 21)")
    parser.add_argument(
        "--encoder-kwargs", type=_json_dict, default={}, help="JSON for the zoo Xceptions, e.g. '{\"width\": 0.25}'"
    )
    parser.add_argument("--markdown", action="store_true", help="print a markdown table instead of a rich table")


def run(args: argparse.Namespace) -> int:
    """Run ``zoo summary``; returns the exit code."""
    return summarize(args)
