"""Images/s of ``zoo predict`` through Lightning (``--devices 1 --num-workers 1``) against the model alone.

Three candidates on the same JPEG folder, timed in alternating rounds in one process (medians reported):

- ``model alone``: the model's forward and argmax on tensors decoded beforehand (no decode, no write);
- ``lightning``: :func:`zoo.infer.batch.predict_to_folder` on one CPU process, images decoded in one DataLoader
  worker while the main process computes, masks and overlays written (``zoo predict --devices 1 --num-workers 1``);
  end to end (Trainer built, input listed, worker started) and the predict loop alone (``summary.json``'s rate);
- ``single-process``: ``zoo predict`` without ``--devices`` (decode, compute and write in turn in one thread).

Ratios are the median over rounds of the per-round ratio, so a slow phase of a shared machine hits both sides
alike. The ratio lightning / model alone says how much of the decoding the worker hides (writing the outputs stays on
the main process, as it does in every ``zoo predict``). Prints a markdown table.

Usage (from the repository root): ``OMP_NUM_THREADS=1 PYTHONPATH=$PWD $PY benchmarks/predict_throughput.py``.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import zoo
from zoo.cli import main as zoo_main
from zoo.cli.predict import output_names
from zoo.data.io import read_image, voc_palette
from zoo.infer.batch import predict_to_folder
from zoo.infer.predictor import Predictor


def write_jpegs(folder: Path, count: int, size: int) -> list[Path]:
    """Smooth random colour fields (JPEG-like content, not white noise) as quality-90 JPEGs."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        coarse = rng.integers(0, 256, (size // 16, size // 16, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((size, size), Image.BILINEAR)
        paths.append(folder / f"{i:04d}.jpg")
        image.save(paths[-1], quality=90)
    return paths


def model_alone(model: torch.nn.Module, tensors: list[torch.Tensor]) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        for x in tensors:
            model(x).argmax(1)
    return len(tensors) / (time.perf_counter() - start)


def lightning(predictor: Predictor, folder: Path, output: Path, count: int) -> tuple[float, float]:
    """End-to-end images/s (Trainer built, input listed, worker started) and the predict loop's (summary.json)."""
    start = time.perf_counter()
    summary = predict_to_folder(
        predictor,
        folder,
        output,
        palette=voc_palette(predictor.num_classes),
        naming=output_names,
        num_workers=1,
        overwrite=True,
        trainer_kwargs={"accelerator": "cpu", "devices": 1, "enable_progress_bar": False},
    )
    assert summary is not None and summary["written"] == count, summary
    return count / (time.perf_counter() - start), summary["images_per_second"]


def single_process(checkpoint: Path, folder: Path, output: Path, count: int) -> float:
    start = time.perf_counter()
    code = zoo_main(["predict", "--checkpoint", str(checkpoint), "--input", str(folder), "--output", str(output)])
    assert code == 0
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--encoder", default="xception65")
    parser.add_argument("--width", type=float, default=0.5, help="the encoder's width multiplier")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    model = zoo.build_model(args.encoder, "deeplabv3plus", num_classes=21, encoder_kwargs={"width": args.width})
    work = Path(tempfile.mkdtemp())
    checkpoint = zoo.save_model(model.eval(), work / "model.pt")
    paths = write_jpegs(work / "in", args.images, args.size)
    predictor = Predictor.from_checkpoint(checkpoint)
    tensors = [torch.from_numpy(read_image(p)).permute(2, 0, 1)[None].float().div(255) for p in paths]
    count, folder = len(paths), work / "in"
    candidates = {
        "model alone (pre-decoded tensors)": lambda: model_alone(predictor.model, tensors),
        "lightning, --devices 1 --num-workers 1, end to end": lambda: lightning(predictor, folder, work / "o", count),
        "single-process zoo predict": lambda: single_process(checkpoint, folder, work / "old", count),
    }
    loop = "lightning, predict loop only (summary.json's images/s)"
    rates: dict[str, list[float]] = {name: [] for name in [*candidates, loop]}
    for run in candidates.values():  # one untimed run each: first-call costs, files cached
        run()
    for _ in range(args.rounds):
        for name, run in candidates.items():
            rate = run()
            if isinstance(rate, tuple):
                rate, loop_rate = rate
                rates[loop].append(loop_rate)
            rates[name].append(rate)
    alone = rates["model alone (pre-decoded tensors)"]
    print(
        f"{args.images} JPEGs {args.size}x{args.size}, DeepLabV3+ {args.encoder} width {args.width}, 21 classes, "
        f"batch 1, torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs ({platform.processor() or '?'}), "
        f"{args.rounds} alternating rounds\n"
    )
    print("| path | images/s (median) | each round | vs model alone (median of per-round ratios) |")
    print("|---|---:|---|---:|")
    for name, values in rates.items():
        ratio = statistics.median(v / a for v, a in zip(values, alone, strict=True))
        rounds = ", ".join(f"{v:.2f}" for v in values)
        print(f"| {name} | {statistics.median(values):.2f} | {rounds} | {ratio:.3f}x |")


if __name__ == "__main__":
    main()
