"""The ``zoo`` command line: one entry point, one module per command, one error handler.

Each command module has ``add_arguments(parser)`` and ``run(args) -> exit code``; it parses and calls the library,
which it imports when the command is chosen (so ``zoo --help`` does not load every library module). A user error
the library raises (``FileNotFoundError``, ``KeyError``, ``ValueError``, ``OSError``) becomes one line on stderr,
``zoo COMMAND: error: ...``, and exit code 2. ``zoo train`` hands its arguments to Lightning's LightningCLI.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from zoo.version import __version__

# name -> (module, one-line help)
COMMANDS = {
    "train": ("zoo.cli.train", "train, validate or test from YAML configs (Lightning's LightningCLI)"),
    "data": ("zoo.cli.data", "write or check datasets"),
    "predict": ("zoo.cli.predict", "segment images with a trained model"),
    "eval": ("zoo.cli.eval", "evaluate a checkpoint on a dataset split (mIoU, per-class IoU, plots)"),
    "export": ("zoo.cli.export", "export a checkpoint to ONNX (dynamic batch, height and width)"),
    "benchmark": ("zoo.cli.benchmark", "latency, throughput, memory, parameters and MACs of encoders and models"),
    "summary": ("zoo.cli.summary", "parameters and GMACs of encoders or encoder × decoder models"),
    "demo": ("zoo.cli.demo", "train a tiny DeepLabV3+ on the built-in shapes data and draw its predictions"),
    "convert": ("zoo.cli.convert", "convert another framework's checkpoint (TF DeepLab) to a zoo model file"),
    "serve": ("zoo.cli.serve", "serve a model over HTTP: Open Inference Protocol v2, a web page, /metrics"),
    "ablation": ("zoo.cli.ablation", "train every variant of a study (configs/studies/) with the same data and budget"),
}
USER_ERRORS = (FileNotFoundError, KeyError, ValueError, OSError)


def error_message(error: BaseException) -> str:
    """The one line shown for a user error (a KeyError's message without its quotes)."""
    if isinstance(error, KeyError) and error.args:
        return str(error.args[0])
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``zoo`` parser; only ``command``'s module is imported and given its arguments."""
    parser = argparse.ArgumentParser(prog="zoo", description="Semantic segmentation zoo.")
    parser.add_argument("--version", action="version", version=f"zoo {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text, add_help=name != "train")
        if name == command:
            importlib.import_module(module).add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``zoo`` command line with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command == "train":
        from zoo.cli.train import main as train_main

        return train_main(argv[argv.index("train") + 1 :])
    args = build_parser(command if command in COMMANDS else None).parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except USER_ERRORS as error:
        print(f"zoo {args.command}: error: {error_message(error)}", file=sys.stderr)
        return 2


__all__ = ["COMMANDS", "build_parser", "error_message", "main"]
