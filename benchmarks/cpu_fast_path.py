"""Where the CPU fast path's time goes, and the back-ends it was measured against.

DeepLabV3+ Xception-65, OS16, 21 classes, 512x512, batch 1, BatchNorm folded (as in
``zoo.optimize_for_inference``). Prints markdown:

1. back-ends timed in alternating rounds (one untimed run, then timed runs, per candidate and round):
   ONNX Runtime, ONNX Runtime without its NCHWc layout transformer, ``torch.compile`` with inductor
   freezing in channels-last, TorchScript ``freeze`` + ``torch.jit.optimize_for_inference``, and
   OpenVINO when it is installed (it is not a zoo dependency);
2. ONNX Runtime's own profile of the model, by operator type;
3. the rate ONNX Runtime reaches on a chain of eight 1x1 convolutions (a bound for this model's
   pointwise-dominated MACs).

Usage (from the repository root): ``source benchmarks/cpu_env.sh && $PY benchmarks/cpu_fast_path.py``.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

import zoo
from zoo.flops import count_macs
from zoo.infer.fold import fold_batchnorm
from zoo.infer.onnx import onnx_bytes as export_onnx_bytes


def _ort_session(onnx_bytes: bytes, threads: int, *, profile: bool = False, disabled: list[str] | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_profiling = profile
    if profile:
        options.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)


def _ort_runner(session) -> Callable[[np.ndarray], object]:
    name = session.get_inputs()[0].name
    return lambda array: session.run(None, {name: array})


def build_candidates(folded: nn.Module, x: torch.Tensor, onnx_bytes: bytes, threads: int) -> dict[str, Callable]:
    array = x.numpy()
    candidates: dict[str, Callable] = {}
    ort_run = _ort_runner(_ort_session(onnx_bytes, threads))
    candidates["onnxruntime"] = lambda: ort_run(array)
    plain_run = _ort_runner(_ort_session(onnx_bytes, threads, disabled=["NchwcTransformer"]))
    candidates["onnxruntime, no NCHWc"] = lambda: plain_run(array)

    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    channels_last = folded.to(memory_format=torch.channels_last)
    compiled = torch.compile(channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    candidates["torch.compile, freezing, channels-last"] = lambda: compiled(x_cl)

    with torch.no_grad():
        scripted = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(folded, x)))
    candidates["TorchScript freeze + optimize_for_inference"] = lambda: scripted(x)

    if importlib.util.find_spec("openvino") is not None:
        import openvino as ov

        core = ov.Core()
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads}
        request = core.compile_model(core.read_model(onnx_bytes, b""), "CPU", config).create_infer_request()
        candidates[f"openvino {ov.__version__.split('-')[0]}"] = lambda: request.infer({0: array})
    return candidates


def alternate(candidates: dict[str, Callable], rounds: int, repeats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in candidates}
    with torch.inference_mode():
        for fn in candidates.values():  # warm-up (compilation on first call)
            fn()
        for _ in range(rounds):
            for name, fn in candidates.items():
                fn()
                for _ in range(repeats):
                    start = time.perf_counter()
                    fn()
                    times[name].append((time.perf_counter() - start) * 1e3)
    return times


def ort_profile(onnx_bytes: bytes, array: np.ndarray, threads: int, runs: int = 6) -> list[tuple[str, float, int]]:
    session = _ort_session(onnx_bytes, threads, profile=True)
    run = _ort_runner(session)
    for _ in range(runs):
        run(array)
    with open(session.end_profiling()) as f:
        events = json.load(f)
    total: collections.Counter[str] = collections.Counter()
    calls: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            total[event["args"]["op_name"]] += event["dur"]
            calls[event["args"]["op_name"]] += 1
    return [(op, us / runs / 1e3, calls[op] // runs) for op, us in total.most_common()]


def pointwise_rate(channels: int, size: int, threads: int, runs: int = 20) -> float:
    """GMAC/s of ONNX Runtime on eight chained 1x1 convolutions (channels -> channels, size x size)."""
    chain = nn.Sequential(*[nn.Conv2d(channels, channels, 1) for _ in range(8)]).eval()
    x = torch.randn(1, channels, size, size)
    run = _ort_runner(_ort_session(export_onnx_bytes(chain, x), threads))
    array = x.numpy()
    for _ in range(3):
        run(array)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run(array)
        times.append(time.perf_counter() - start)
    return 8 * channels * channels * size * size / statistics.median(times) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    x = torch.randn(1, 3, args.size, args.size)
    model = zoo.build_model("xception65", "deeplabv3plus", num_classes=21, output_stride=16).eval()
    folded = fold_batchnorm(model, x)
    onnx_bytes = export_onnx_bytes(folded, x)
    macs = count_macs(model, x)

    times = alternate(build_candidates(folded, x, onnx_bytes, threads), args.rounds, args.repeats)
    print(f"DeepLabV3+ Xception-65 OS16 {args.size}x{args.size}, BatchNorm folded, {macs / 1e9:.1f} GMACs, ", end="")
    print(f"{threads} threads, {args.rounds} rounds x {args.repeats} timed runs\n")
    print("| back-end | median ms | min ms | GMAC/s |\n|---|---|---|---|")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"| {name} | {median:.1f} | {min(samples):.1f} | {macs / median / 1e6:.0f} |")

    print("\nONNX Runtime profile (per run)\n\n| operator | ms | nodes | share |\n|---|---|---|---|")
    profile = ort_profile(onnx_bytes, x.numpy(), threads)
    total = sum(ms for _, ms, _ in profile)
    for op, ms, nodes in profile:
        print(f"| {op} | {ms:.1f} | {nodes} | {100 * ms / total:.1f}% |")

    print("\nONNX Runtime on eight chained 1x1 convolutions\n\n| channels | size | GMAC/s |\n|---|---|---|")
    for channels, size in ((728, 32), (2048, 32), (256, 128)):
        print(f"| {channels} | {size}x{size} | {pointwise_rate(channels, size, threads):.0f} |")


if __name__ == "__main__":
    main()
