"""``zoo convert SOURCE SRC --output FILE``: a TF DeepLab checkpoint or TFLite export to a zoo model file."""

from __future__ import annotations

import argparse
from pathlib import Path

from zoo.cli.options import examples


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``zoo convert``: the sources ``deeplab-tf`` and ``deeplab-tflite``."""
    sources = parser.add_subparsers(dest="source", metavar="SOURCE", required=True)
    tf = sources.add_parser(
        "deeplab-tf",
        help="Google's TF DeepLab checkpoints (research/deeplab model zoo)",
        description="Convert a TF DeepLab checkpoint (xception41/65/71, ASPP or dense prediction cell, decoder) "
        "to a zoo model whose outputs equal the TF graph's (needs TensorFlow: pip install 'zoo[tf]').",
    )
    tf.add_argument("src", type=Path, help="checkpoint prefix (.../model.ckpt), a folder holding one, or a .tar.gz")
    tf.add_argument("--output", required=True, type=Path, help="the zoo model file to write")
    tf.add_argument(
        "--output-stride", type=int, choices=(8, 16, 32), default=16, help="output stride (default 16; 32: MobileNetV3)"
    )
    tf.add_argument("--num-classes", type=int, help="classes of a new head for a backbone-only (ImageNet) checkpoint")
    tf.add_argument("--force", action="store_true", help="overwrite an existing output file")
    lite = sources.add_parser(
        "deeplab-tflite",
        help="Google's TFLite exports of TF DeepLab (MobileNetV2, float or uint8)",
        description="Convert a TFLite export of TF DeepLab (MobileNetV2 + ASPP, float32 or quantized weights, "
        "dequantized to float32) to a zoo model taking RGB in 0..1 (needs the tflite package: "
        "pip install 'zoo[tflite]').",
    )
    lite.add_argument("src", type=Path, help="the .tflite file")
    lite.add_argument("--output", required=True, type=Path, help="the zoo model file to write")
    lite.add_argument("--class-names", type=Path, help="a text file with one class name a line (default: VOC's 21)")
    lite.add_argument("--force", action="store_true", help="overwrite an existing output file")
    parser.epilog = examples(
        "zoo convert deeplab-tf deeplabv3_pascal_trainval_2018_01_04.tar.gz --output xception65_voc.pt",
        "zoo convert deeplab-tflite deeplabv3_257_mv_gpu.tflite --output mnv2_voc.pt",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``zoo convert``; returns the exit code."""
    from zoo.checkpoint import save_model
    from zoo.convert.deeplab_tf import convert_deeplab_tf
    from zoo.convert.tflite import convert_deeplab_tflite

    if args.output.exists() and not args.force:
        raise ValueError(f"{args.output} exists; pass --force to overwrite it")
    try:
        if args.source == "deeplab-tflite":
            model = convert_deeplab_tflite(args.src, class_names=args.class_names)
        else:
            model = convert_deeplab_tf(args.src, output_stride=args.output_stride, num_classes=args.num_classes)
    except ImportError as error:
        raise ValueError(str(error)) from None
    save_model(model, args.output)
    described = f"{model.build_args['encoder']} + {model.build_args['decoder']}, {model.num_classes} classes"
    stride = model.build_args["output_stride"]
    print(f"{args.src} -> {args.output} ({described}, output stride {stride}, semantics deeplab-tf)")
    return 0
