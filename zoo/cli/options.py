"""What the commands share: the error line, the value parsers and the option groups of inference.

Nothing here imports torch or the models, so every command's ``--help`` is instant; a command imports the library
inside ``run``. The library names its arguments (``precision``, ``device``); :func:`error_line` turns an
:class:`~zoo.errors.ArgumentError` into the flag that set it (``--precision``), so flag wording lives only here.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zoo.errors import ArgumentError, ZooWarning
from zoo.infer.precision import BACKENDS, PRECISION_NAMES

USER_ERRORS = (FileNotFoundError, KeyError, ValueError, OSError)
DEVICE_KINDS = ("cpu", "cuda")
LIBRARY_ALIASES = {"backend": "fast_backend"}  # optimize_for_inference's backend is --fast-backend


# ----------------------------------------------------------------------------------------------------------------------
# Errors and warnings


def error_message(error: BaseException) -> str:
    """The one line shown for a user error (a KeyError's message without its quotes)."""
    if isinstance(error, KeyError) and error.args:
        return str(error.args[0])
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def flags_of(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each argument's destination -> its long flag (``"batch_size"`` -> ``"--batch-size"``), also of the
    subcommands (``zoo data make-shapes``)."""
    flags = {a.dest: max(a.option_strings, key=len) for a in parser._actions if a.option_strings}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags = {**flags_of(sub), **flags}
    for argument, dest in LIBRARY_ALIASES.items():  # the library's name for what a flag of another name sets
        if dest in flags:
            flags[argument] = flags[dest]
    return flags


def error_line(command: str, error: BaseException, flags: dict[str, str] | None = None) -> str:
    """``zoo COMMAND: error: ...``; an :class:`ArgumentError` names the flag of its argument where one sets it."""
    if isinstance(error, ArgumentError) and flags and error.argument in flags:
        message = error.message
        for name in (n for n in error.also if n in flags):  # a word of its own, not part of a path or a quote
            message = re.sub(rf"(?<![\w/.'\"-]){re.escape(name)}(?![\w/.'\"-])", flags[name], message)
        return f"zoo {command}: error: argument {flags[error.argument]}: {message}"
    return f"zoo {command}: error: {error_message(error)}"


def show_warnings(command: str) -> None:
    """Print warnings as ``zoo COMMAND: warning: ...`` lines (no file names or source lines), the library's own
    (:class:`~zoo.errors.ZooWarning`) always. Call inside ``warnings.catch_warnings()``."""
    warnings.filterwarnings("always", category=ZooWarning)

    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        print(f"zoo {command}: warning: {message}", file=sys.stderr)

    warnings.showwarning = show


# ----------------------------------------------------------------------------------------------------------------------
# Values


def positive_int(text: str) -> int:
    """An integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def size(text: str) -> tuple[int, int]:
    """The one size syntax of the command line: ``N`` (square) or ``HxW``, positive integers."""
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected N or HxW with positive integers, got {text!r}")
    return (values[0], values[-1])


def encoder_kwargs(items: Sequence[str]) -> dict[str, Any]:
    """``--encoder-kwargs``: one JSON object (``'{"width": 0.25}'``), as in the training configs.

    The older ``KEY=VALUE ...`` form still works, with a deprecation warning.

    Raises:
        ArgumentError: naming ``encoder_kwargs``.
    """
    text = " ".join(items).strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            raise ArgumentError("encoder_kwargs", f"not a JSON object ({error}); e.g. '{{\"width\": 0.25}}'") from None
        if not isinstance(value, dict):
            raise ArgumentError("encoder_kwargs", f"expected a JSON object, got {text!r}")
        return value
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise ArgumentError("encoder_kwargs", f"expected a JSON object such as '{{\"width\": 0.25}}', got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value.strip("'\"")
    warnings.warn(
        f"--encoder-kwargs KEY=VALUE is deprecated; write a JSON object: '{json.dumps(out)}'",
        ZooWarning,
        stacklevel=2,
    )
    return out


def device(text: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N``; whether CUDA is there is checked when the command runs."""
    kind, _, index = text.partition(":")
    if kind not in DEVICE_KINDS or (index and not (kind == "cuda" and index.isdigit())):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; valid: cpu, cuda, cuda:N")
    return text


# ----------------------------------------------------------------------------------------------------------------------
# Option groups


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device``."""
    parser.add_argument("--device", type=device, default="cpu", help="cpu (default), cuda or cuda:N")


def add_precision_arguments(
    parser: argparse.ArgumentParser, choices: Sequence[str] = PRECISION_NAMES, help_text: str | None = None
) -> None:
    """``--precision`` and ``--calibration``: every precision but fp32 runs on the fast path and implies it."""
    parser.add_argument(
        "--precision",
        choices=choices,
        default="fp32",
        help=help_text
        or "fp32 (default); any other runs on the fast path (implies --fast); int8: static quantization "
        "calibrated on --calibration, CPU",
    )
    parser.add_argument(
        "--calibration", type=Path, default=None, metavar="DIR", help="int8: a folder of images like the data"
    )


def add_fast_argument(parser: argparse.ArgumentParser) -> None:
    """``--fast``: :func:`zoo.optimize_for_inference`."""
    parser.add_argument(
        "--fast",
        action="store_true",
        help="the fast path (zoo.optimize_for_inference: BatchNorms folded, the fastest engine on the CPU)",
    )
    parser.add_argument(
        "--fast-backend",
        choices=BACKENDS,
        default="auto",
        help="the fast path's engine (implies --fast): auto (the fastest measured, remembered), onnxruntime, "
        "openvino (pip install 'zoo[openvino]'), compile, eager",
    )


def add_inference_arguments(parser: argparse.ArgumentParser) -> None:
    """The test-time options shared by ``zoo predict`` and ``zoo eval``, with ``--device`` and ``--batch-size``."""
    group = parser.add_argument_group("test-time augmentation and sliding window")
    group.add_argument("--tta", action="store_true", help="DeepLab's multi-scale (0.5 to 1.75) + flip")
    group.add_argument("--scales", type=float, nargs="+", default=None, help="image scales to average (0.75 1 1.25)")
    group.add_argument("--flip", action="store_true", help="average with the horizontally mirrored image")
    group.add_argument("--slide", action="store_true", help="sliding-window inference (windows of --crop)")
    group.add_argument(
        "--crop", type=positive_int, nargs=2, metavar=("H", "W"), default=None, help="window size (513 513)"
    )
    group.add_argument(
        "--stride", type=positive_int, nargs=2, metavar=("H", "W"), default=None, help="window step (2/3 crop)"
    )
    add_device_argument(parser)
    parser.add_argument("--batch-size", type=positive_int, default=1, help="images (or windows) per forward pass")


def inference_options(args: argparse.Namespace, deeplab_scales: Sequence[float]) -> dict[str, Any]:
    """``scales``, ``flip``, ``slide`` and ``batch_size`` of :class:`zoo.Predictor` from the parsed options."""
    scales = tuple(args.scales) if args.scales else (tuple(deeplab_scales) if args.tta else (1.0,))
    slide = None
    if args.slide or args.crop or args.stride:
        crop = tuple(args.crop) if args.crop else (513, 513)
        stride = tuple(args.stride) if args.stride else tuple(math.ceil(2 * c / 3) for c in crop)
        if stride[0] > crop[0] or stride[1] > crop[1]:
            raise ValueError(f"--stride {stride[0]} {stride[1]} is larger than --crop {crop[0]} {crop[1]}")
        slide = (crop, stride)
    return {"scales": scales, "flip": bool(args.flip or args.tta), "slide": slide, "batch_size": args.batch_size}


def examples(*lines: str) -> str:
    """An epilog of example command lines for ``--help``."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


__all__ = [
    "BACKENDS",
    "USER_ERRORS",
    "add_device_argument",
    "add_fast_argument",
    "add_inference_arguments",
    "add_precision_arguments",
    "device",
    "encoder_kwargs",
    "error_line",
    "error_message",
    "examples",
    "flags_of",
    "inference_options",
    "positive_int",
    "show_warnings",
    "size",
]
