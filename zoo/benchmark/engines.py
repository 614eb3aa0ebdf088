"""The engines table (``zoo benchmark --engines``): every engine this CPU and the installed packages offer for one
model, timed in alternating rounds in one process, as a speed-up over smp's eager fp32 model.

Each round runs every engine once untimed, then ``repeats`` timed runs; an engine's latency is the median over all
its timed runs and its speed-up the median over rounds of the per-round ratio to smp eager fp32, so slow phases of a
shared machine hit every engine alike. Engines that cannot run here (bf16 without native bf16 instructions, OpenVINO
not installed) are rows with the reason. int8 rows give their pixel agreement with the zoo's fp32 eager model on the
timed input; with random weights and random calibration images that is not an accuracy figure, and ``auto``'s
agreement gate is off (``min_agreement=0``): the table times auto's choice.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from zoo.benchmark.candidates import build_smp, build_zoo, describe_error
from zoo.benchmark.config import BenchmarkConfig, parse_model_spec
from zoo.infer.optimize import optimize_for_inference

# (label, backend, precision): what ``optimize_for_inference`` builds for each row
ENGINES = (
    ("zoo eager fp32", "eager", "fp32"),
    ("zoo ONNX Runtime fp32", "onnxruntime", "fp32"),
    ("zoo OpenVINO fp32", "openvino", "fp32"),
    ("zoo eager bf16 (autocast)", "eager", "bf16"),
    ("zoo torch.compile bf16 (autocast, channels-last, freezing)", "compile", "bf16"),
    ("zoo OpenVINO bf16", "openvino", "bf16"),
    ("zoo ONNX Runtime int8 (QDQ)", "onnxruntime", "int8"),
    ("zoo OpenVINO int8 (NNCF)", "openvino", "int8"),
    ("zoo torchao int8 (PT2E, X86InductorQuantizer, freezing)", "torchao", "int8"),
    ("zoo auto fp32", "auto", "fp32"),
    ("zoo auto int8", "auto", "int8"),
)
BASELINE = "smp eager fp32"


@dataclass
class EngineRow:
    """One engine: median latency (ms), speed-up over smp eager fp32, int8 pixel agreement, or why it did not run."""

    engine: str
    latency_ms: float | None = None
    speedup: float | None = None
    agreement: float | None = None
    note: str = ""
    times: list[list[float]] = field(default_factory=list, repr=False)


def _build(backend: str, precision: str, model: torch.nn.Module, x: torch.Tensor, config: BenchmarkConfig) -> Any:
    calibration = None
    if precision == "int8":
        size = x.shape[-2:]
        calibration = config.calibration or [
            torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(i)) for i in range(4)
        ]
    # random weights: every engine's classes are near ties, so auto's agreement gate is off here (timing only)
    gate = {"min_agreement": 0.0} if backend == "auto" and config.calibration is None else {}
    return optimize_for_inference(
        model, x, backend, precision=precision, calibration=calibration, num_threads=config.threads, **gate
    )


def run_engines(config: BenchmarkConfig, *, progress: Callable[[str], None] | None = None) -> list[EngineRow]:
    """The engines table for ``config.models[0]`` at ``config.sizes[0]`` (batch ``config.batch_size``)."""
    say = progress or (lambda line: None)
    if config.threads:
        torch.set_num_threads(config.threads)
    encoder, decoder = parse_model_spec(config.models[0])
    torch.manual_seed(0)
    zoo_model = build_zoo(encoder, decoder, config, config.output_stride).eval()
    x = torch.rand(config.batch_size, 3, *config.sizes[0])
    runners: dict[str, Callable] = {}
    rows = {BASELINE: EngineRow(BASELINE)}
    try:
        smp_model = build_smp(encoder, decoder or "", config, config.output_stride).eval()
        runners[BASELINE] = smp_model
    except Exception as error:
        rows[BASELINE].note = describe_error(error)
    with torch.inference_mode():
        reference = zoo_model(x).argmax(1)
    for label, backend, precision in ENGINES:
        rows[label] = EngineRow(label)
        say(f"building {label}")
        try:
            fast = _build(backend, precision, zoo_model, x, config)
        except Exception as error:  # a missing package or instruction set: a row that says why
            rows[label].note = describe_error(error).splitlines()[0][:160]
            continue
        runners[label] = fast
        if backend == "auto":
            measured = ", ".join(f"{n} {t:.0f}" for n, t in fast.timings_ms.items())
            rows[label].note = f"chose {fast.backend} (its build timed, ms: {measured})"
        if precision == "int8":
            with torch.inference_mode():
                rows[label].agreement = (fast(x).argmax(1) == reference).float().mean().item()
    _time_rounds(runners, rows, x, config, say)
    return list(rows.values())


def _time_rounds(runners: dict[str, Callable], rows: dict[str, EngineRow], x, config, say) -> None:
    with torch.inference_mode():
        for run in runners.values():
            for _ in range(max(1, config.warmup)):
                run(x)
        for index in range(config.rounds):
            say(f"round {index + 1}/{config.rounds}")
            for name, run in runners.items():
                run(x)  # untimed: the timed runs follow this engine's own run, not another runtime's thread pool
                times = []
                for _ in range(config.repeats):
                    start = time.perf_counter()
                    run(x)
                    times.append((time.perf_counter() - start) * 1e3)
                rows[name].times.append(times)
    base = rows[BASELINE].times
    for row in rows.values():
        if not row.times:
            continue
        row.latency_ms = statistics.median(t for r in row.times for t in r)
        if base:
            row.speedup = statistics.median(
                statistics.median(b) / statistics.median(t) for b, t in zip(base, row.times, strict=True)
            )


def markdown_table(rows: list[EngineRow]) -> str:
    """The rows as a markdown table."""
    lines = [
        "| engine | median ms | speed-up over smp eager fp32 | int8 pixel agreement | note |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        ms = f"{r.latency_ms:.1f}" if r.latency_ms is not None else "-"
        up = f"{r.speedup:.2f}x" if r.speedup is not None else "-"
        agree = f"{100 * r.agreement:.2f}%" if r.agreement is not None else ""
        lines.append(f"| {r.engine} | {ms} | {up} | {agree} | {r.note} |")
    return "\n".join(lines)


__all__ = ["ENGINES", "EngineRow", "markdown_table", "run_engines"]
