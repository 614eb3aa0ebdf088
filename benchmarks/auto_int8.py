"""``backend="auto"`` int8 on a trained model: each int8 engine's accuracy against fp32, auto's choice, and the times.

For each model file, every int8 engine (ONNX Runtime QDQ, OpenVINO through NNCF) is calibrated on ``--calibration``
and compared with the fp32 model by :func:`zoo.quantization_report` on ``--evaluate`` (pixel agreement, worst image,
mIoU of both where masks are given); then ``optimize_for_inference(..., backend="auto", precision="int8")`` is built
without its cache and its choice printed (or why it refused). Last, the fp32 and int8 engines are timed at
``--size`` in alternating rounds in one process (median over rounds; speed-up over the model's eager fp32).
Prints markdown rows.

Usage (from the repository root)::

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD $PY benchmarks/auto_int8.py --threads 1 --size 513 \\
        --calibration ../shared/data/voc_sample/JPEGImages \\
        --evaluate ../shared/data/voc_sample/JPEGImages:../shared/data/voc_sample/SegmentationClass MODEL.pt ...
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

import zoo
from zoo.data.io import image_files, read_image, read_mask
from zoo.infer.optimize import optimize_for_inference

sys.path.insert(0, str(Path(__file__).parent))
from cpu_int8 import alternate, medians  # noqa: E402 - the alternating timer the other CPU benchmarks use

ENGINES = (("ONNX Runtime int8", "onnxruntime", "int8"), ("OpenVINO int8", "openvino", "int8"))
TIMED = (("ONNX Runtime fp32", "onnxruntime", "fp32"), ("OpenVINO fp32", "openvino", "fp32"), *ENGINES)


def load_images(spec: str) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Images of a folder, and their masks (by file stem) when the spec is ``IMAGES:MASKS``."""
    images_dir, _, masks_dir = spec.partition(":")
    files = image_files(images_dir)
    masks = [read_mask(Path(masks_dir) / f"{path.stem}.png") for path in files] if masks_dir else None
    return [read_image(path) for path in files], masks


def times(runners: dict, x: torch.Tensor, rounds: int) -> dict[str, tuple[float, float]]:
    """Each runner's median ms and median per-round speed-up over the first runner, in alternating rounds."""
    with torch.inference_mode():
        timed = alternate({name: (lambda run=run: run(x)) for name, run in runners.items()}, rounds, repeats=1)
    return medians(timed, next(iter(runners)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--calibration", required=True)
    parser.add_argument("--evaluate", action="append", required=True, metavar="IMAGES[:MASKS]")
    parser.add_argument("--size", type=int, default=513)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    sets = [load_images(spec) for spec in args.evaluate]
    images = [image for imgs, _ in sets for image in imgs]
    masks = None if any(m is None for _, m in sets) else [mask for _, ms in sets for mask in ms]
    example = zoo.infer.quantize.image_tensor(images[0])
    for path in args.models:
        model = zoo.load_model(path).eval()
        print(f"\n{path.name}")
        for label, backend, precision in ENGINES:
            fast = optimize_for_inference(model, example, backend, precision=precision, calibration=args.calibration)
            report = zoo.quantization_report(model, fast, images, masks, check_ranges=False)
            miou = (
                f"{100 * report.miou_reference:.2f} -> {100 * report.miou_quantized:.2f}"
                if report.miou_reference is not None
                else "-"
            )
            print(
                f"| {path.name} | {label} | {100 * report.pixel_agreement:.2f}% | "
                f"{100 * report.worst_image_agreement:.2f}% | {miou} |"
            )
        try:
            auto = optimize_for_inference(
                model, example, "auto", precision="int8", calibration=args.calibration, cache_choice=False
            )
            print(f"auto int8 chose {auto.backend} (build timings ms: {auto.timings_ms})")
        except Exception as error:
            print(f"auto int8 refused: {type(error).__name__}: {error}")
        x = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
        runners = {"eager fp32": model}
        for label, backend, precision in TIMED:
            runners[label] = optimize_for_inference(
                model, x, backend, precision=precision, calibration=args.calibration
            )
        for name, (ms, speedup) in times(runners, x, args.rounds).items():
            print(f"| {path.name} {args.size}x{args.size} | {name} | {ms:.1f} | {speedup:.2f}x |")


if __name__ == "__main__":
    main()
