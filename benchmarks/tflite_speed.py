"""Google's TFLite DeepLab models, converted, on the zoo's fast path against LiteRT's interpreter (XNNPACK).

Two models (tests/data/real_models), each at its own fixed input size, batch 1:

- ``deeplabv3_mnv2_dm05_pascal_quant.tflite`` (MobileNetV2 dm 0.5, OS16, 513x513): the zoo's converted model
  through ``optimize_for_inference`` in fp32 (ONNX Runtime) and int8 (ONNX Runtime QDQ, calibrated on the
  ``--calibration`` photographs, resized to 513x513), against LiteRT running the uint8 file itself;
- ``deeplabv3_257_mv_gpu.tflite`` (MobileNetV2 dm 0.5, OS8, 257x257): the zoo's fast path fp32 and int8
  against LiteRT running the float32 file.

LiteRT runs with its default delegate (XNNPACK) and, for comparison, without it (TFLite's builtin kernels).
Every row gets the same photograph at the model's size and the same thread count; rows are timed in alternating
rounds (one untimed run, then ``--repeats`` timed runs, per row and round); medians over all timed runs. The
int8 rows' agreement with fp32 is :func:`zoo.quantization_report` on the calibration photographs.

Usage (from the repository root): ``source benchmarks/cpu_env.sh && $PY benchmarks/tflite_speed.py
--calibration ../shared/data/voc_sample/JPEGImages``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import zoo
from zoo.benchmark.report import machine_description

sys.path.insert(0, str(Path(__file__).parent))
from cpu_int8 import alternate  # noqa: E402 - the alternating timer the other CPU benchmarks use

MODELS = Path(__file__).resolve().parents[1] / "tests" / "data" / "real_models"
FILES = {513: "deeplabv3_mnv2_dm05_pascal_quant.tflite", 257: "deeplabv3_257_mv_gpu.tflite"}


def photos(folder: Path, size: int) -> list[np.ndarray]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return [np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR)) for p in files]


def litert_runner(path: Path, image: np.ndarray, threads: int, xnnpack: bool) -> Callable[[], object]:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    it = Interpreter(model_path=str(path), num_threads=threads, experimental_op_resolver_type=resolver)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    x = image[None] if inp["dtype"] == np.uint8 else image[None].astype(np.float32) / 127.5 - 1
    it.set_tensor(inp["index"], x)
    return it.invoke


def rows_for(size: int, threads: int, images: list[np.ndarray]) -> tuple[dict[str, Callable[[], object]], str]:
    path = MODELS / FILES[size]
    model = zoo.convert_deeplab_tflite(path)
    batches = [torch.from_numpy(i.copy()).permute(2, 0, 1)[None].float() / 255 for i in images]
    x = batches[0]
    fp32 = zoo.optimize_for_inference(model, x, backend="onnxruntime", num_threads=threads)
    int8 = zoo.optimize_for_inference(model, x, precision="int8", calibration=batches, num_threads=threads)
    report = zoo.quantization_report(model, int8, images)
    kind = "uint8" if size == 513 else "float32"
    rows = {
        f"zoo fast fp32 (onnxruntime), {size}": lambda: fp32(x),
        f"zoo fast int8 (onnxruntime QDQ), {size}": lambda: int8(x),
        f"LiteRT {kind} file, XNNPACK, {size}": litert_runner(path, images[0], threads, xnnpack=True),
        f"LiteRT {kind} file, builtin kernels, {size}": litert_runner(path, images[0], threads, xnnpack=False),
    }
    agreement = (
        f"{FILES[size]}: zoo int8 vs zoo fp32 on {report.images} photos: pixel agreement "
        f"{report.pixel_agreement:.4f} (worst image {report.worst_image_agreement:.4f})"
    )
    return rows, agreement


def table(times: dict[str, list[list[float]]], reference: str) -> str:
    lines = ["| row | median ms | min ms | LiteRT XNNPACK time / row's time |", "|---|---|---|---|"]
    for name, rounds in times.items():
        flat = [t for r in rounds for t in r]
        ratio = statistics.median([t for r in times[reference] for t in r]) / statistics.median(flat)
        lines.append(f"| {name} | {statistics.median(flat):.1f} | {min(flat):.1f} | {ratio:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calibration", type=Path, required=True, help="a folder of photographs")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--sizes", type=int, nargs="+", default=[513, 257], choices=sorted(FILES))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    for threads in args.threads:
        torch.set_num_threads(threads)
        print(f"\n{machine_description('cpu', threads)}; {args.rounds} rounds x {args.repeats} timed runs")
        for size in args.sizes:
            rows, agreement = rows_for(size, threads, photos(args.calibration, size))
            times = alternate(rows, args.rounds, args.repeats)
            reference = next(name for name in rows if "XNNPACK" in name)
            print(f"\n{agreement}\n\n{table(times, reference)}")


if __name__ == "__main__":
    main()
