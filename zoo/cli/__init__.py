"""The ``zoo`` command line: one entry point, one module per command, one error handler.

Each command module has ``add_arguments(parser)`` and ``run(args) -> exit code``; it parses and calls the library,
which it imports inside ``run`` (so ``zoo COMMAND --help`` loads neither torch nor the models). A user error the
library raises (``FileNotFoundError``, ``KeyError``, ``ValueError``, ``OSError``) becomes one line on stderr,
``zoo COMMAND: error: ...``, and exit code 2; an error that names a Python argument names its flag instead
(:func:`zoo.cli.options.error_line`). The shared options live in :mod:`zoo.cli.options`. ``zoo train`` hands its
arguments to Lightning's LightningCLI.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Sequence

from zoo.cli.options import USER_ERRORS, error_line, error_message, flags_of, show_warnings
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
    "convert": ("zoo.cli.convert", "convert a TF DeepLab checkpoint or TFLite export to a zoo model file"),
    "serve": ("zoo.cli.serve", "serve a model over HTTP: Open Inference Protocol v2, a web page, /metrics"),
    "ablation": ("zoo.cli.ablation", "train every variant of a study (configs/studies/) with the same data and budget"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``zoo`` parser; only ``command``'s module is imported and given its arguments (and its flags are kept as
    the parser's ``flags`` default: argument name -> flag, for error lines)."""
    parser = argparse.ArgumentParser(prog="zoo", description="Semantic segmentation zoo.")
    parser.add_argument("--version", action="version", version=f"zoo {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(
            name,
            help=help_text,
            description=help_text,
            add_help=name != "train",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if name == command:
            importlib.import_module(module).add_arguments(sub)
            sub.set_defaults(flags=flags_of(sub))
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
    with warnings.catch_warnings():
        show_warnings(args.command)
        try:
            return int(module.run(args) or 0)
        except USER_ERRORS as error:
            print(error_line(args.command, error, getattr(args, "flags", None)), file=sys.stderr)
            return 2


__all__ = ["COMMANDS", "USER_ERRORS", "build_parser", "error_message", "main"]
