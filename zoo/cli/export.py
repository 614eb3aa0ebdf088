"""``zoo export``: a zoo model file or training checkpoint to ONNX (fp32, or int8 calibrated on images) or to an
OpenVINO IR (fp32, the model's description in its rt_info)."""

from __future__ import annotations

import argparse
from pathlib import Path

from zoo.cli.options import add_precision_arguments, examples


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``zoo export``."""
    parser.description = (
        "Export a zoo model file or training checkpoint to ONNX (checked with ONNX Runtime) or to an OpenVINO IR "
        "(checked with OpenVINO)."
    )
    parser.epilog = examples(
        "zoo export --checkpoint model.pt --onnx model.onnx",
        "zoo export --checkpoint model.pt --onnx model-int8.onnx --precision int8 --calibration calib/",
        "zoo export --checkpoint model.pt --format openvino --output model.xml",
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="zoo.save_model file or Lightning checkpoint")
    parser.add_argument("--format", choices=("onnx", "openvino"), default="onnx", help="onnx (default) or openvino")
    parser.add_argument("--onnx", type=Path, default=None, help="output .onnx file (--format onnx)")
    parser.add_argument("--output", type=Path, default=None, help="output file: .onnx, or .xml (and .bin) for openvino")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset version (>= 17, default 18; fp32)")
    parser.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime vs PyTorch comparison")
    add_precision_arguments(parser, choices=("fp32", "int8"))


def run(args: argparse.Namespace) -> int:
    """Run ``zoo export``; returns the exit code."""
    from zoo.infer.precision import check_precision

    check_precision(args.precision, calibration=args.calibration, choices=("fp32", "int8"))
    if args.onnx is not None and args.output is not None:
        raise ValueError("give --output FILE or --onnx FILE, not both")
    args.onnx = args.onnx or args.output
    if args.onnx is None:
        raise ValueError("give --output FILE (.onnx, or .xml for --format openvino)")
    if args.format == "openvino":
        return _run_openvino(args)
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


def _run_openvino(args: argparse.Namespace) -> int:
    """The fp32 IR with the model's description in its rt_info, checked against PyTorch."""
    from zoo.checkpoint import load_model
    from zoo.infer.openvino import export_openvino
    from zoo.infer.precision import require_openvino

    if args.precision != "fp32":
        raise ValueError("--format openvino writes fp32 (OpenVINO quantizes at run time: --fast --precision int8)")
    if args.onnx.suffix != ".xml":
        raise ValueError(f"--output {args.onnx}: an OpenVINO IR is a .xml file (its weights go to the .bin beside it)")
    require_openvino()
    path = export_openvino(load_model(args.checkpoint), args.onnx, check=not args.no_check)
    print(f"wrote {path} and {path.with_suffix('.bin').name} (OpenVINO IR, fp32, dynamic batch/height/width)")
    return 0
