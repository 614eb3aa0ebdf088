"""Where the time goes: Google's uint8 MobileNetV2 DeepLab (513x513), converted, per operator type in each engine.

OpenVINO: the CPU plugin's per-node counters (``PERF_COUNT``) for the zoo's graph as the runner compiled it before
(dynamic sizes, planar ``NCHW`` output) and now (fixed input shape, channels-last output), and with the argmax in
the engine (``OpenVinoRunner(argmax=True)``); fp32 and int8 (NNCF, calibrated on the ``--calibration``
photographs). ONNX Runtime: its profiler (``enable_profiling``) on the graphs ``optimize_for_inference`` builds
(fp32: fixed shape; int8: the dynamic-size QDQ graph). Milliseconds per run, averaged over ``--runs`` runs of the
first photograph after 3 untimed ones, at ``--threads`` threads.

Usage (from the repository root): ``source benchmarks/cpu_env.sh && $PY benchmarks/tflite_profile.py
--calibration ../shared/data/voc_sample/JPEGImages``.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import warnings
from pathlib import Path

import torch

import zoo
from zoo.benchmark.report import machine_description
from zoo.infer import openvino as zov
from zoo.infer.onnx import onnx_bytes

sys.path.insert(0, str(Path(__file__).parent))
from tflite_speed import FILES, MODELS, photos, to_tensor  # noqa: E402 - the speed benchmark's inputs


def openvino_profile(ov_model, x: torch.Tensor, threads: int, runs: int) -> collections.Counter:
    import openvino as ov

    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", "PERF_COUNT": True}
    request = ov.Core().compile_model(ov_model, "CPU", {**config, "INFERENCE_NUM_THREADS": threads})
    request = request.create_infer_request()
    for _ in range(3):
        request.infer([x.numpy()])
    per_type: collections.Counter = collections.Counter()
    for _ in range(runs):
        request.infer([x.numpy()])
        for node in request.get_profiling_info():
            per_type[f"{node.node_type} ({node.exec_type})"] += node.real_time.total_seconds() * 1e3 / runs
    return per_type


def onnxruntime_profile(graph: bytes, x: torch.Tensor, threads: int, runs: int) -> collections.Counter:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.mkdtemp(prefix="zoo-ortprof-")) / "run")
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x.numpy()}
    for _ in range(3 + runs):  # the profiler records the 3 untimed runs too: skipped below
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    per_run = len(kernels) // (runs + 3)
    per_type: collections.Counter = collections.Counter()
    for event in kernels[3 * per_run :]:
        per_type[event["args"]["op_name"]] += event["dur"] / 1e3 / runs
    return per_type


def show(name: str, per_type: collections.Counter, top: int) -> None:
    print(f"\n{name}: {sum(per_type.values()):.1f} ms per run in its operators")
    for op, ms in per_type.most_common(top):
        print(f"  {ms:6.2f} ms  {op}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calibration", type=Path, required=True, help="a folder of photographs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    print(machine_description("cpu", args.threads))
    images = photos(args.calibration, 513)
    batches = [to_tensor(image) for image in images]
    x = batches[0]
    model = zoo.convert_deeplab_tflite(MODELS / FILES[513])
    for precision in ("fp32", "int8"):
        cal = batches if precision == "int8" else None
        fast = zoo.optimize_for_inference(
            model, x, "onnxruntime", precision=precision, calibration=cal, num_threads=args.threads
        )
        graph = fast.runner.graph if precision == "int8" else onnx_bytes(fast.folded_model, x)
        show(f"ONNX Runtime {precision}", onnxruntime_profile(graph, x, args.threads, args.runs), args.top)
        ov_model = zov.convert(fast.folded_model)
        if precision == "int8":
            ov_model = zov.quantize(ov_model, batches)
        fixed = zov.fixed_shape(ov_model, x.shape)
        zov.channels_last_outputs(fixed)
        masks = zov.fixed_shape(ov_model, x.shape)
        zov.argmax_output(masks)
        variants = {"dynamic sizes, NCHW output": ov_model, "fixed shape, channels-last output": fixed}
        variants["fixed shape, argmax in the engine"] = masks
        for label, variant in variants.items():
            show(f"OpenVINO {precision}, {label}", openvino_profile(variant, x, args.threads, args.runs), args.top)


if __name__ == "__main__":
    main()
