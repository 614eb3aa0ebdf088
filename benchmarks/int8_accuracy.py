"""What int8 costs in accuracy on a trained model: pixel agreement with fp32 and mIoU, per calibration set.

For every calibration folder the model is quantized once (``optimize_for_inference(..., precision="int8")``), then
:func:`zoo.quantization_report` compares it with the fp32 model on every evaluation folder: pixel agreement,
the worst image's agreement, the mIoU of both where masks are given, and the share of quantized tensors whose
values on those images stay within their calibrated ranges. Prints one markdown row per pair, with the report's
warnings.

Usage (from the repository root)::

    $PY benchmarks/int8_accuracy.py --checkpoint CKPT \\
        --calibrate shapes-train=DIR [--calibrate NAME=DIR ...] \\
        --evaluate shapes-val=IMAGES:MASKS [--evaluate NAME=IMAGES ...]

Masks are matched to images by file stem (``NAME.png`` in the mask folder, values = class ids, 255 = ignore).
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import torch

import zoo
from zoo.data.io import image_files, read_image, read_mask
from zoo.infer.quantize import image_tensor


def _named(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, value


def load_set(spec: str) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Images of a folder, and their masks when the spec is ``IMAGES:MASKS``."""
    images_dir, _, masks_dir = spec.partition(":")
    files = image_files(images_dir)
    images = [read_image(path) for path in files]
    masks = [read_mask(Path(masks_dir) / f"{path.stem}.png") for path in files] if masks_dir else None
    return images, masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--calibrate", type=_named, action="append", required=True, metavar="NAME=DIR")
    parser.add_argument("--evaluate", type=_named, action="append", required=True, metavar="NAME=IMAGES[:MASKS]")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--weight-bits", type=int, choices=(7, 8), default=None, help="default: 7 without VNNI")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    model = zoo.load_model(args.checkpoint).eval()
    sets = {name: load_set(spec) for name, spec in args.evaluate}
    example = image_tensor(next(iter(sets.values()))[0][0])
    print(f"checkpoint {args.checkpoint}\n")
    print("| calibrated on | evaluated on | images | pixel agreement | worst image | mIoU fp32 | mIoU int8 | "
          "ranges covered | warnings |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for cal_name, folder in args.calibrate:
        reduce_range = None if args.weight_bits is None else args.weight_bits == 7
        fast = zoo.optimize_for_inference(
            model, example, precision="int8", calibration=folder, reduce_range=reduce_range
        )
        for name, (images, masks) in sets.items():
            report = zoo.quantization_report(model, fast, images, masks)
            miou = [f"{100 * v:.2f}" if v is not None else "-" for v in (report.miou_reference, report.miou_quantized)]
            coverage = "-" if report.range_coverage is None else f"{100 * report.range_coverage:.0f}%"
            print(
                f"| {cal_name} ({fast.calibration_images}) | {name} | {report.images} | "
                f"{100 * report.pixel_agreement:.2f}% | {100 * report.worst_image_agreement:.2f}% | {miou[0]} | "
                f"{miou[1]} | {coverage} | {'; '.join(report.warnings) or '-'} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
