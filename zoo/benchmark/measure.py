"""Timing and memory of benchmark candidates, in alternating rounds."""

from __future__ import annotations

import ctypes
import gc
import os
import resource
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

import torch

from zoo.benchmark.candidates import Candidate, describe_error, group_candidates
from zoo.benchmark.config import BenchmarkConfig, BenchmarkError, BenchmarkRow, check_config, parse_model_spec
from zoo.flops import count_macs, count_params


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _trim_heap() -> None:
    """Return freed heap memory to the OS (glibc's ``malloc_trim``), so that an RSS rise measured next
    comes from the block being measured, not from what earlier candidates left allocated-but-free."""
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def memory_kind(device: torch.device) -> str:
    """What the peak-memory column measures on ``device``."""
    if device.type == "cuda":
        return "CUDA max allocated: resident tensors + peak during runs"
    if _rss_bytes() is not None:
        return "RSS (/proc, sampled every 2 ms, free heap trimmed first): resident tensors + peak rise during warm-up"
    return "peak RSS of the process (getrusage)"


@contextmanager
def _peak_rise(device: torch.device) -> Iterator[list[int]]:
    """Yields a one-element list that holds, on exit, the peak memory rise in bytes during the block."""
    result = [0]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield result
        torch.cuda.synchronize(device)
        result[0] = max(0, torch.cuda.max_memory_allocated(device) - before)
        return
    _trim_heap()
    start = _rss_bytes()
    if start is None:
        yield result
        result[0] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return
    peak = [start]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.002):
            peak[0] = max(peak[0], _rss_bytes() or 0)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        done.set()
        thread.join()
        peak[0] = max(peak[0], _rss_bytes() or 0)
        result[0] = peak[0] - start


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _fail(candidate: Candidate, error: BaseException, device: torch.device) -> None:
    candidate.error = describe_error(error)
    candidate.runner = None  # type: ignore[assignment]
    candidate.optimizer = None
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _precision(candidate: Candidate, config: BenchmarkConfig) -> str:
    """The candidate's precision: int8 is the fast path's alone, the other candidates run fp32 beside it."""
    if config.precision == "int8" and not candidate.impl.startswith("zoo fast"):
        return "fp32"
    return config.precision


def _prepare(candidate: Candidate, config: BenchmarkConfig, device: torch.device) -> None:
    """Counts, inputs and warm-up (memory is measured during warm-up)."""
    h, w = candidate.size
    candidate.params = count_params(candidate.module)
    one = torch.randn(1, 3, h, w, device=device)
    candidate.macs = count_macs(candidate.module, one)
    candidate.inputs = torch.randn(config.batch_size, 3, h, w, device=device)
    if config.channels_last:
        candidate.inputs = candidate.inputs.contiguous(memory_format=torch.channels_last)
    candidate.mode = config.mode
    candidate.precision = _precision(candidate, config)
    if config.mode == "train":
        candidate.module.train()
        candidate.target = torch.randint(0, config.num_classes, (config.batch_size, h, w), device=device)
        candidate.optimizer = torch.optim.SGD(candidate.module.parameters(), lr=1e-3, momentum=0.9)
    with _peak_rise(device) as rise:
        for _ in range(max(1, config.warmup)):
            candidate.run()
        _sync(device)
    candidate.peak_bytes = max(candidate.peak_bytes, rise[0])


def _time_round(candidate: Candidate, config: BenchmarkConfig, device: torch.device) -> None:
    # One untimed run first: the timed ones then follow the candidate's own run, not another runtime's
    # (a thread pool that just ran, torch's OpenMP or ONNX Runtime's, spins for a while and slows the next).
    candidate.run()
    _sync(device)
    times = []
    context = _peak_rise(device) if device.type == "cuda" else nullcontext([0])
    with context as rise:
        for _ in range(config.repeats):
            _sync(device)
            start = time.perf_counter()
            candidate.run()
            _sync(device)
            times.append((time.perf_counter() - start) * 1e3)
    candidate.peak_bytes = max(candidate.peak_bytes, rise[0])
    candidate.times.append(times)


def measure(candidates: list[Candidate], config: BenchmarkConfig, device: torch.device) -> None:
    """Warm up every candidate, then time them in ``config.rounds`` alternating rounds (errors kept per candidate)."""
    steps = [_prepare] + [_time_round] * config.rounds
    for step in steps:
        for candidate in candidates:
            if candidate.error is not None:
                continue
            try:
                step(candidate, config, device)
            except Exception as error:
                _fail(candidate, error, device)


def _p90(values: list[float]) -> float:
    """The 90th percentile, interpolated linearly between samples (``statistics.quantiles``, inclusive method)."""
    return values[0] if len(values) == 1 else statistics.quantiles(values, n=10, method="inclusive")[-1]


def _row(candidate: Candidate, spec: str, config: BenchmarkConfig, device: torch.device, os_: int) -> BenchmarkRow:
    row = setting_row(spec, candidate.impl, candidate.part, candidate.size, os_, config, device, candidate.error)
    row.timed = "forward" if config.mode == "infer" else "train step (forward+loss+backward+SGD)"
    row.params_m = None if candidate.params is None else candidate.params / 1e6
    row.gmacs = None if candidate.macs is None else candidate.macs / 1e9
    row.versus = candidate.versus
    row.precision = _precision(candidate, config)
    samples = [t for round_times in candidate.times for t in round_times]
    if samples and candidate.error is None:
        row.latency_ms = statistics.median(samples)
        row.p90_ms = _p90(samples)
        row.throughput = config.batch_size * 1e3 / row.latency_ms
        row.peak_mem_mb = (candidate.resident_bytes() + candidate.peak_bytes) / 2**20
        row.rounds = len(candidate.times)
        row.samples = len(samples)
    return row


def _speedups(candidates: list[Candidate], rows: list[BenchmarkRow]) -> None:
    """Per-round paired ratio (reference's round median / this candidate's), median over rounds."""
    by_impl = {(c.impl, c.part): c for c in candidates}
    for candidate, row in zip(candidates, rows, strict=True):
        ref = by_impl.get((candidate.versus, candidate.part)) if candidate.versus else None
        if ref is None or row.latency_ms is None or ref.error is not None or not ref.times:
            row.versus = None if ref is None else row.versus
            continue
        ratios = [statistics.median(r) / statistics.median(o) for r, o in zip(ref.times, candidate.times, strict=False)]
        row.speedup = statistics.median(ratios)


def run_benchmark(config: BenchmarkConfig, *, progress: Callable[[str], None] | None = None) -> list[BenchmarkRow]:
    """Measure every model spec at every setting of ``config``; one row per candidate and setting.

    An error at one setting (an out-of-memory above all) is reported in that setting's rows.

    Args:
        config: what to measure.
        progress: called with a short line before each setting (e.g. ``print``).

    Raises:
        BenchmarkError: a bad argument (unknown model or decoder, unavailable device, bad counts).
    """
    check_config(config)
    for spec in config.models:
        parse_model_spec(spec)
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _run_settings(config, progress)
    finally:
        torch.set_num_threads(threads)


def _run_settings(config: BenchmarkConfig, progress: Callable[[str], None] | None) -> list[BenchmarkRow]:
    device = torch.device(config.device)
    rows: list[BenchmarkRow] = []
    for spec in config.models:
        for size, os_ in config.settings():
            if progress:
                progress(f"{spec} {size[0]}x{size[1]} OS{os_} batch {config.batch_size} {config.mode}")
            try:
                candidates, failures = group_candidates(spec, size, os_, config, device)
                failed = [setting_row(spec, impl, part, size, os_, config, device, why) for impl, part, why in failures]
            except BenchmarkError:
                raise
            except Exception as error:  # the zoo model itself cannot be built at this setting
                part = "model" if parse_model_spec(spec)[1] else "encoder"
                rows.append(setting_row(spec, "zoo", part, size, os_, config, device, describe_error(error)))
                continue
            measure(candidates, config, device)
            group = [_row(c, spec, config, device, os_) for c in candidates]
            _speedups(candidates, group)
            rows.extend(group + failed)
            del candidates
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def setting_row(
    spec: str,
    impl: str,
    part: str,
    size: tuple[int, int],
    os_: int,
    config: BenchmarkConfig,
    device: torch.device,
    message: str | None,
) -> BenchmarkRow:
    """A row for one candidate at one setting, without measurements (``message``: why it has none)."""
    return BenchmarkRow(
        model=spec,
        impl=impl,
        part=part,
        size=f"{size[0]}x{size[1]}",
        batch_size=config.batch_size,
        output_stride=os_,
        mode=config.mode,
        device=str(device),
        precision=config.precision,
        channels_last=config.channels_last,
        compiled=config.compile,
        timed="",
        memory=memory_kind(device),
        error=message,
    )
