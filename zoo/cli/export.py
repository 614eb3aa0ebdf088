"""``zoo export``: a zoo model file or training checkpoint to ONNX, checked with ONNX Runtime."""

from __future__ import annotations

import argparse
from pathlib import Path

from zoo.checkpoint import load_model
from zoo.infer.onnx import export_onnx


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``zoo export``."""
    parser.description = "Export a zoo model file or training checkpoint to ONNX and check it with ONNX Runtime."
    parser.add_argument("--checkpoint", required=True, type=Path, help="zoo.save_model file or Lightning checkpoint")
    parser.add_argument("--onnx", required=True, type=Path, help="output .onnx file")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset version (>= 17, default 18)")
    parser.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime vs PyTorch comparison")


def run(args: argparse.Namespace) -> int:
    """Run ``zoo export``; returns the exit code."""
    model = load_model(args.checkpoint)
    path = export_onnx(model, args.onnx, opset=args.opset, check=not args.no_check)
    print(f"wrote {path} (opset {args.opset}, dynamic batch/height/width)")
    return 0
