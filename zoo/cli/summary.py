"""``zoo summary``: parameters and GMACs of encoders or of encoder × decoder models (see :mod:`zoo.summary`)."""

from __future__ import annotations

import argparse

from zoo.cli.options import encoder_kwargs, examples, size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``zoo summary``."""
    parser.description = "Parameters and multiply-adds (GMACs, counted by torch.utils.flop_counter) at a given size."
    parser.epilog = examples(
        "zoo summary encoders --size 512",
        "zoo summary models --size 512x1024 --output-stride 16 --markdown",
        "zoo summary models --encoders xception65 --decoders deeplabv3plus --encoder-kwargs '{\"width\": 0.25}'",
    )
    parser.add_argument("what", choices=("encoders", "models"), help="encoder table or encoder × decoder table")
    parser.add_argument("--size", type=size, default=(512, 512), help="input size, N or HxW (default: 512)")
    parser.add_argument(
        "--output-stride", type=int, choices=(8, 16, 32), default=None, help="default: 32 for encoders, 16 for models"
    )
    parser.add_argument("--encoders", nargs="+", default=None, help="encoder names (default: the zoo's and two smp)")
    parser.add_argument("--decoders", nargs="+", default=None, help="decoder names (default: all)")
    parser.add_argument("--num-classes", type=int, default=21, help="classes of the models (default: 21)")
    parser.add_argument(
        "--encoder-kwargs", nargs="+", default=[], help="a JSON object for the zoo Xceptions, e.g. '{\"width\": 0.25}'"
    )
    parser.add_argument("--markdown", action="store_true", help="print a markdown table instead of a rich table")


def run(args: argparse.Namespace) -> int:
    """Run ``zoo summary``; returns the exit code."""
    from zoo.summary import summarize

    summarize(
        args.what,
        size=args.size,
        output_stride=args.output_stride,
        encoders=args.encoders,
        decoders=args.decoders,
        num_classes=args.num_classes,
        encoder_kwargs=encoder_kwargs(args.encoder_kwargs),
        markdown=args.markdown,
    )
    return 0
