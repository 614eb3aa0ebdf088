"""``zoo export``: a zoo model file or training checkpoint to ONNX (fp32, or int8 calibrated on images)."""

from __future__ import annotations

import argparse
from pathlib import Path

from zoo.checkpoint import load_model
from zoo.infer.accuracy import quantization_report
from zoo.infer.onnx import OnnxModel, export_onnx
from zoo.infer.quantize import calibration_batches, export_int8_onnx


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``zoo export``."""
    parser.description = "Export a zoo model file or training checkpoint to ONNX and check it with ONNX Runtime."
    parser.add_argument("--checkpoint", required=True, type=Path, help="zoo.save_model file or Lightning checkpoint")
    parser.add_argument("--onnx", required=True, type=Path, help="output .onnx file")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset version (>= 17, default 18; fp32)")
    parser.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime vs PyTorch comparison")
    parser.add_argument(
        "--precision",
        choices=("fp32", "int8"),
        default="fp32",
        help="int8: static quantization (QDQ, per-channel weights, BatchNorms folded) calibrated on --calibration",
    )
    parser.add_argument(
        "--calibration", type=Path, default=None, metavar="DIR", help="int8: a folder of images like the data"
    )


def run(args: argparse.Namespace) -> int:
    """Run ``zoo export``; returns the exit code."""
    if args.precision == "int8":
        return _run_int8(args)
    model = load_model(args.checkpoint)
    path = export_onnx(model, args.onnx, opset=args.opset, check=not args.no_check)
    print(f"wrote {path} (opset {args.opset}, dynamic batch/height/width)")
    return 0


def _run_int8(args: argparse.Namespace) -> int:
    """The int8 file, then its agreement with the fp32 model on the calibration images."""
    batches = calibration_batches(args.calibration)  # raises for a missing --calibration before any work
    model = load_model(args.checkpoint)
    path = export_int8_onnx(model, args.onnx, batches)
    print(f"wrote {path} (int8 QDQ, opset 17, dynamic batch/height/width, calibrated on {len(batches)} images)")
    if not args.no_check:
        report = quantization_report(model.eval(), OnnxModel(path), batches, check_ranges=False)
        print(report.lines()[0].replace("pixel agreement", "check: pixel agreement") + " (calibration images)")
    return 0
