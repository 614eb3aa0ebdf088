"""``zoo eval``: a checkpoint on a dataset split, DeepLab's evaluation protocol (see :mod:`zoo.infer.evaluate`)."""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from zoo.cli.predict import add_inference_arguments, add_precision_arguments, inference_options
from zoo.data import build_dataset
from zoo.infer.accuracy import predictor_report
from zoo.infer.evaluate import evaluate, save_results
from zoo.infer.predictor import Predictor
from zoo.metrics import print_scores


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``zoo eval``."""
    parser.description = "DeepLab evaluation: full-resolution images, one confusion matrix over the split, mIoU."
    parser.add_argument("--checkpoint", required=True, type=Path, help="zoo.save_model file or Lightning checkpoint")
    parser.add_argument("--dataset", required=True, help="dataset name (voc, cityscapes, folder, shapes)")
    parser.add_argument("--root", required=True, type=Path, help="dataset root folder")
    parser.add_argument("--split", default="val", help="split to evaluate (default val)")
    parser.add_argument("--output", required=True, type=Path, help="folder for the plots and metrics.json")
    add_precision_arguments(parser)
    add_inference_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Run ``zoo eval``; returns the exit code."""
    options = inference_options(args)
    fast = args.precision != "fp32"
    predictor = Predictor.from_checkpoint(
        args.checkpoint, args.device, fast=fast, precision=args.precision, calibration=args.calibration, **options
    )
    dataset = build_dataset(args.dataset, root=args.root, split=args.split)
    class_names = list(getattr(dataset, "classes", None) or predictor.class_names or [])
    if len(class_names) != predictor.num_classes:
        class_names = [str(i) for i in range(predictor.num_classes)]
    start = time.perf_counter()
    scores = evaluate(predictor, dataset)
    seconds = time.perf_counter() - start
    slide = options["slide"]
    setting = f"scales {list(options['scales'])}, flip {options['flip']}, slide {slide}"
    print_scores(scores, class_names, title=f"{args.dataset} {args.split}: {len(dataset)} images ({setting})")
    info = {
        "checkpoint": str(args.checkpoint),
        "dataset": args.dataset,
        "split": args.split,
        "images": len(dataset),
        "scales": list(options["scales"]),
        "flip": options["flip"],
        "slide": [list(v) for v in slide] if slide else None,
        "seconds": seconds,
        "precision": args.precision,
    }
    if fast:
        report = predictor_report(predictor, dataset)
        print(f"{args.precision} against fp32 (one scale, no flip):", *report.lines(), sep="\n  ")
        info["quantization_report"] = dataclasses.asdict(report)
    save_results(scores, class_names, args.output, info)
    print(f"mIoU {scores.miou:.4f} over {len(dataset)} images ({seconds:.1f} s); plots and metrics in {args.output}")
    return 0
