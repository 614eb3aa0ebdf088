"""``zoo export``: a zoo model file or training checkpoint to ONNX (fp32, or int8 calibrated on images)."""

from __future__ import annotations

import argparse
from pathlib import Path

from zoo.cli.options import add_precision_arguments, examples


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``zoo export``."""
    parser.description = "Export a zoo model file or training checkpoint to ONNX and check it with ONNX Runtime."
    parser.epilog = examples(
        "zoo export --checkpoint model.pt --onnx model.onnx",
        "zoo export --checkpoint model.pt --onnx model-int8.onnx --precision int8 --calibration calib/",
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="zoo.save_model file or Lightning checkpoint")
    parser.add_argument("--onnx", required=True, type=Path, help="output .onnx file")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset version (>= 17, default 18; fp32)")
    parser.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime vs PyTorch comparison")
    add_precision_arguments(parser, choices=("fp32", "int8"))


def run(args: argparse.Namespace) -> int:
    """Run ``zoo export``; returns the exit code."""
    from zoo.infer.precision import check_precision

    check_precision(args.precision, calibration=args.calibration, choices=("fp32", "int8"))
    if args.precision == "int8":
        return _run_int8(args)
    from zoo.checkpoint import load_model
    from zoo.infer.onnx import export_onnx

    model = load_model(args.checkpoint)
    path = export_onnx(model, args.onnx, opset=args.opset, check=not args.no_check)
    print(f"wrote {path} (opset {args.opset}, dynamic batch/height/width)")
    return 0


def _run_int8(args: argparse.Namespace) -> int:
    """The int8 file, then its agreement with the fp32 model on the calibration images."""
    from zoo.checkpoint import load_model
    from zoo.infer.accuracy import quantization_report
    from zoo.infer.onnx import OnnxModel
    from zoo.infer.quantize import calibration_batches, export_int8_onnx

    batches = calibration_batches(args.calibration)  # reads the images (skipping unreadable ones) before any work
    model = load_model(args.checkpoint)
    path = export_int8_onnx(model, args.onnx, batches)
    print(f"wrote {path} (int8 QDQ, opset 17, dynamic batch/height/width, calibrated on {len(batches)} images)")
    if not args.no_check:
        report = quantization_report(model.eval(), OnnxModel(path), batches, check_ranges=False)
        print(report.lines()[0].replace("pixel agreement", "check: pixel agreement") + " (calibration images)")
    return 0
