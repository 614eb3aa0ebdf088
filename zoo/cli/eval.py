"""``zoo eval``: a checkpoint on a dataset split, DeepLab's evaluation protocol (see :mod:`zoo.infer.evaluate`)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zoo.cli.options import add_fast_argument, add_inference_arguments, add_precision_arguments, examples, positive_int
from zoo.cli.scale import add_scale_arguments, run_eval


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``zoo eval``."""
    parser.description = "DeepLab evaluation: full-resolution images, one confusion matrix over the split, mIoU."
    parser.epilog = examples(
        "zoo eval --checkpoint model.pt --dataset voc --root VOCdevkit/VOC2012 --output eval/",
        "zoo eval --checkpoint model.pt --dataset folder --root data/ --split all --output eval/ --show-dir show/",
        "zoo eval --checkpoint model.pt --dataset voc --root VOC --output eval/ --precision int8 --calibration c/",
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="zoo.save_model file or Lightning checkpoint")
    parser.add_argument("--dataset", required=True, help="dataset name (voc, cityscapes, folder, shapes)")
    parser.add_argument("--root", required=True, type=Path, help="dataset root folder")
    parser.add_argument("--split", default="val", help="split to evaluate (default val; 'all': a folder's every image)")
    parser.add_argument("--output", required=True, type=Path, help="folder for the plots and metrics.json")
    parser.add_argument(
        "--show-dir", type=Path, default=None, help="write pred/ masks and vis/ image | truth | prediction"
    )
    parser.add_argument("--force", action="store_true", help="replace the results already in --output")
    add_fast_argument(parser)
    add_precision_arguments(parser)
    add_inference_arguments(parser)
    pad = parser.add_mutually_exclusive_group()
    pad.add_argument(
        "--pad-to",
        type=positive_int,
        nargs=2,
        metavar=("H", "W"),
        default=None,
        help="pad each image at the bottom/right to at least HxW with the model's mean colour, crop the logits back "
        "(default: DeepLab's eval crop for a converted TF DeepLab model: 513 513 on voc, 1025 2049 on cityscapes)",
    )
    pad.add_argument("--no-pad", action="store_true", help="evaluate every image as it is, whatever the model")
    add_scale_arguments(parser)


def _shower(folder: Path | None, class_names: list[str], palette: list) -> Callable | None:
    """What ``--show-dir`` writes for each item: the predicted mask, and image | truth | prediction (titled, as the
    demo draws them) above a legend."""
    from zoo.data.io import write_image, write_mask
    from zoo.viz import PANEL_TITLES, panels

    if folder is None:
        return None

    def show(item: dict[str, Any], prediction: Any) -> None:
        image, truth, name = item["image"], item["mask"], item.get("name", "image")
        write_mask(folder / "pred" / f"{name}.png", prediction, palette)
        strip = panels(image, [truth, prediction], class_names, palette, titles=PANEL_TITLES)
        write_image(folder / "vis" / f"{name}.png", strip)

    return show


def run(args: argparse.Namespace) -> int:
    """Run ``zoo eval``; returns the exit code."""
    from zoo.cli.options import inference_options
    from zoo.data import build_dataset
    from zoo.data.io import voc_palette
    from zoo.infer.accuracy import predictor_report
    from zoo.infer.evaluate import evaluate, save_results
    from zoo.infer.predictor import Predictor
    from zoo.infer.tta import DEEPLAB_SCALES
    from zoo.metrics import print_scores

    if (args.output / "metrics.json").exists() and not args.force:
        raise ValueError(f"{args.output / 'metrics.json'} exists; pass --force to replace it, or another --output")
    options = inference_options(args, DEEPLAB_SCALES)
    pad_to = None if args.no_pad else (tuple(args.pad_to) if args.pad_to else args.dataset)
    fast = args.fast or args.precision != "fp32"
    predictor = Predictor.from_checkpoint(
        args.checkpoint,
        args.device,
        pad_to=pad_to,
        fast=fast,
        precision=args.precision,
        calibration=args.calibration,
        backend=args.fast_backend,
        **options,
    )
    dataset = build_dataset(args.dataset, root=args.root, split=None if args.split == "all" else args.split)
    class_names = list(getattr(dataset, "classes", None) or predictor.class_names or [])
    if len(class_names) != predictor.num_classes:
        class_names = [str(i) for i in range(predictor.num_classes)]
    if predictor.class_names is not None and list(predictor.class_names) != class_names:
        print(
            f"zoo eval: warning: {args.checkpoint} was trained on classes {predictor.class_names}, "
            f"the dataset has {class_names}; scores follow the dataset's order",
            file=sys.stderr,
        )
    show = _shower(args.show_dir, class_names, predictor.palette or voc_palette(len(class_names)))
    start = time.perf_counter()
    scaled = args.devices is not None
    scores = run_eval(args, predictor, dataset, show) if scaled else evaluate(predictor, dataset, show=show)
    if scores is None:  # a process other than global rank 0 of a --devices run: rank 0 reports
        return 0
    seconds = time.perf_counter() - start
    slide = options["slide"]
    pad = predictor.pad_to
    setting = f"scales {list(options['scales'])}, flip {options['flip']}, slide {slide}, pad to {pad}"
    print_scores(scores, class_names, title=f"{args.dataset} {args.split}: {len(dataset)} images ({setting})")
    info = {
        "checkpoint": str(args.checkpoint),
        "dataset": args.dataset,
        "split": args.split,
        "images": len(dataset),
        "scales": list(options["scales"]),
        "flip": options["flip"],
        "slide": [list(v) for v in slide] if slide else None,
        "pad_to": list(pad) if pad else None,
        "seconds": seconds,
        "precision": args.precision,
    }
    if args.precision != "fp32":
        report = predictor_report(predictor, dataset)
        print(f"{args.precision} against fp32 (one scale, no flip):", *report.lines(), sep="\n  ")
        info["quantization_report"] = dataclasses.asdict(report)
    save_results(scores, class_names, args.output, info)
    print(f"mIoU {scores.miou:.4f} over {len(dataset)} images ({seconds:.1f} s); plots and metrics in {args.output}")
    return 0
