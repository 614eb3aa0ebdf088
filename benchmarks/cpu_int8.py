"""int8 and bf16 on the CPU beside fp32: DeepLabV3+ Xception-65, OS16, 21 classes, batch 1.

Every row runs the same model (random weights: latency does not depend on them) and is timed in alternating
rounds (one untimed run, then ``--repeats`` timed runs, per candidate and round); "speed-up" is the median over
rounds of smp's eager round median over the row's. Rows:

- smp's ``DeepLabV3Plus(tu-xception65)`` and the zoo's model, eager fp32 (the references);
- the zoo's fast path in fp32 (``optimize_for_inference``: BatchNorms folded, ONNX Runtime);
- the zoo's int8 fast path (``optimize_for_inference(..., precision="int8")``: ONNX Runtime QDQ, per-channel
  weights; 7-bit weights on a CPU without VNNI), and the same graph with 8-bit weights for comparison;
- eager bf16 under ``torch.autocast`` where the CPU has native bf16 (AVX-512 BF16 or AMX; ``--bf16`` times it
  elsewhere too, where it is emulated and an order of magnitude slower);
- OpenVINO's int8 (NNCF post-training quantization of the same folded ONNX graph, same calibration images) when
  ``openvino`` and ``nncf`` are importable (they are not zoo dependencies).

Calibration: ``--calibration DIR`` (images), else four random images of the input size (timing only).

Usage (from the repository root): ``source benchmarks/cpu_env.sh && $PY benchmarks/cpu_int8.py``.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import statistics
import time
import warnings
from collections.abc import Callable

import torch

import zoo
from zoo.benchmark.candidates import build_smp
from zoo.benchmark.config import BenchmarkConfig
from zoo.benchmark.report import machine_description
from zoo.infer.fold import fold_batchnorm
from zoo.infer.onnx import ort_session
from zoo.infer.quantize import (
    calibrate,
    calibration_batches,
    check_cpu_precision,
    dynamic_graph,
    has_vnni,
    quantize_graph,
)


def _eager(module: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype | None = None) -> Callable[[], object]:
    def run() -> object:
        with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            return module(x)

    return run


def _openvino_int8(folded: torch.nn.Module, batches: list[torch.Tensor], x: torch.Tensor, threads: int) -> Callable:
    import nncf
    import openvino as ov

    core = ov.Core()
    model = core.read_model(dynamic_graph(folded), b"")
    dataset = nncf.Dataset([b.numpy() for b in batches])
    quantized = nncf.quantize(model, dataset, subset_size=len(batches), preset=nncf.QuantizationPreset.PERFORMANCE)
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    request = core.compile_model(quantized, "CPU", config).create_infer_request()
    array = x.numpy()
    return lambda: request.infer({0: array})


def _native_bf16() -> bool:
    try:
        check_cpu_precision("bf16")
    except ValueError:
        return False
    return True


def build_candidates(
    size: int, threads: int, calibration: str | None, *, bf16: bool = False
) -> dict[str, tuple[str, Callable[[], object]]]:
    """name -> (precision, run) for every row that can be built here."""
    torch.manual_seed(0)
    model = zoo.build_model("xception65", "deeplabv3plus", num_classes=21, output_stride=16).eval()
    smp_model = build_smp("xception65", "deeplabv3plus", BenchmarkConfig(models=[]), 16).eval()
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    if calibration is None:
        batches = [torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(i)) for i in range(1, 5)]
    else:
        batches = calibration_batches(calibration)
    folded = fold_batchnorm(copy.deepcopy(model), x, inplace=True)
    rows: dict[str, tuple[str, Callable[[], object]]] = {"smp eager": ("fp32", _eager(smp_model, x))}
    rows["zoo eager"] = ("fp32", _eager(model, x))
    fp32 = zoo.optimize_for_inference(model, x, backend="onnxruntime", num_threads=threads)
    rows["zoo fast (onnxruntime)"] = ("fp32", lambda: fp32(x))
    vnni = has_vnni()
    int8 = zoo.optimize_for_inference(model, x, precision="int8", calibration=batches, num_threads=threads)
    rows[f"zoo fast (onnxruntime, int8, {'8' if vnni else '7'}-bit weights)"] = ("int8", lambda: int8(x))
    other = ort_session(_requantized(folded, batches, reduce_range=vnni), num_threads=threads)
    array = x.numpy()
    rows[f"onnxruntime int8, {'7' if vnni else '8'}-bit weights"] = ("int8", lambda: other.run(None, {"input": array}))
    if bf16 or _native_bf16():
        note = "bf16" if _native_bf16() else "bf16, emulated (no native bf16)"
        rows["zoo eager, autocast"] = (note, _eager(model, x, torch.bfloat16))
    if importlib.util.find_spec("openvino") and importlib.util.find_spec("nncf"):
        import openvino as ov

        name = f"openvino {ov.__version__.split('-')[0]} int8 (nncf)"
        rows[name] = ("int8", _openvino_int8(folded, batches, x, threads))
    return rows


def _requantized(folded: torch.nn.Module, batches: list[torch.Tensor], *, reduce_range: bool) -> bytes:
    graph = dynamic_graph(folded)
    return quantize_graph(graph, calibrate(graph, batches), reduce_range=reduce_range)


def alternate(candidates: dict[str, Callable[[], object]], rounds: int, repeats: int) -> dict[str, list[list[float]]]:
    """Per candidate, the timed runs (ms) of each round."""
    times: dict[str, list[list[float]]] = {name: [] for name in candidates}
    for run in candidates.values():
        run()
    for _ in range(rounds):
        for name, run in candidates.items():
            run()
            samples = []
            for _ in range(repeats):
                start = time.perf_counter()
                run()
                samples.append((time.perf_counter() - start) * 1e3)
            times[name].append(samples)
    return times


def medians(times: dict[str, list[list[float]]], reference: str) -> dict[str, tuple[float, float]]:
    """Per candidate of :func:`alternate`'s ``times``: the median ms over all timed runs, and the median over rounds
    of ``reference``'s round median over the candidate's (rows alternate within a round, so a burst of load on a
    shared machine hits both sides of a ratio)."""
    out = {}
    for name, rounds in times.items():
        pairs = zip(times[reference], rounds, strict=True)
        ratio = statistics.median(statistics.median(a) / statistics.median(b) for a, b in pairs)
        out[name] = (statistics.median(t for r in rounds for t in r), ratio)
    return out


def table(rows: dict[str, tuple[str, Callable]], times: dict[str, list[list[float]]], reference: str) -> str:
    lines = ["| back-end | precision | median ms | min ms | speed-up vs smp eager |", "|---|---|---|---|---|"]
    for name, (precision, _) in rows.items():
        flat = [t for r in times[name] for t in r]
        pairs = zip(times[reference], times[name], strict=True)
        ratios = [statistics.median(a) / statistics.median(b) for a, b in pairs]
        lines.append(
            f"| {name} | {precision} | {statistics.median(flat):.1f} | {min(flat):.1f} | "
            f"{statistics.median(ratios):.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--calibration", default=None, help="a folder of calibration images (default: random)")
    parser.add_argument("--bf16", action="store_true", help="time autocast bf16 even where the CPU emulates it")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    rows = build_candidates(args.size, args.threads, args.calibration, bf16=args.bf16)
    times = alternate({name: run for name, (_, run) in rows.items()}, args.rounds, args.repeats)
    print(f"{machine_description('cpu', args.threads)}; {args.size}x{args.size}, batch 1, OS16, 21 classes")
    print(f"{args.rounds} rounds x {args.repeats} timed runs; VNNI: {has_vnni()}\n")
    print(table(rows, times, "smp eager"))


if __name__ == "__main__":
    main()
