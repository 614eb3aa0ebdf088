"""``zoo benchmark``: parameters, multiply-adds, latency, throughput and memory of encoders and models.

Each setting (model, input size, output stride) is one group of candidates timed in alternating rounds:
round 1 runs the zoo model, then its fast path (``--fast``), then the peers (``--reference``: smp's model
of the same architecture and timm's ``features_only`` encoder), round 2 again in the same order, and so
on; in every round each candidate runs once untimed before its timed runs. Latency is the median (and 90th
percentile) over all timed runs; the speed-up against the peer is the median over rounds of the per-round
ratio, so slow phases of a shared machine hit both sides alike.

Python API::

    rows = run_benchmark(BenchmarkConfig(models=["xception65:deeplabv3plus"], sizes=[(512, 512)], reference=True))
    print_table(rows); write_csv(rows, "b.csv"); write_json(rows, "b.json"); plot_rows(rows, "b.png")
"""

from __future__ import annotations

import argparse
import ast
import csv
import ctypes
import dataclasses
import gc
import json
import math
import os
import platform
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils import _pytree as pytree

from zoo.flops import count_macs, count_params
from zoo.optimize import BACKENDS, PRECISIONS

Mode = Literal["infer", "train"]
SCALING_SIZES = (256, 384, 512, 768, 1024)
SCALING_STRIDES = (8, 16, 32)

# The zoo's aligned Xceptions and their counterparts: timm's model name (smp reaches it as "tu-<name>").
TIMM_NAMES = {
    "xception41": "xception41",
    "xception65": "xception65",
    "xception71": "xception71",
    "xception": "legacy_xception",
}
SMP_DECODERS = {"deeplabv3plus": "DeepLabV3Plus", "deeplabv3": "DeepLabV3", "unet": "Unet"}


class BenchmarkError(ValueError):
    """A bad benchmark argument (unknown model, size, ...); the message names the argument."""


@dataclass
class BenchmarkConfig:
    """What to benchmark and how.

    Args:
        models: specs ``ENCODER:DECODER`` (a model) or ``ENCODER`` (an encoder alone).
        sizes: input sizes (height, width).
        batch_size: images per batch.
        output_stride: encoder output stride (8, 16, 32).
        mode: "infer" (forward without gradients) or "train" (forward, loss, backward, SGD step).
        device: "cpu" or "cuda" (or "cuda:N").
        precision: "fp32", or "bf16"/"fp16" through ``torch.autocast``.
        channels_last: run every candidate in channels-last memory format.
        compile: ``torch.compile`` every candidate (its compilation happens during warm-up).
        compile_mode: ``mode`` for ``torch.compile``.
        fast: add the zoo's fast inference path (:func:`zoo.optimize.optimize_for_inference`), infer only.
        fast_backend: its back-end (one of :data:`zoo.optimize.BACKENDS`).
        reference: add smp's model and timm's encoder of the same architecture, alternating with ours.
        scaling: instead of ``sizes``, sweep input sizes 256..1024 (at ``output_stride``) and output
            strides 8/16/32 (at the first size).
        warmup: untimed runs per candidate before the first round.
        repeats: timed runs per candidate per round (after one untimed run).
        rounds: alternating rounds.
        num_classes: classes of the models.
        encoder_kwargs: extra arguments for the zoo's encoders (e.g. ``{"width": 0.125}``); peers ignore them.
        threads: torch (and ONNX Runtime) intra-op threads; None keeps torch's default.
    """

    models: list[str]
    sizes: list[tuple[int, int]] = field(default_factory=lambda: [(512, 512)])
    batch_size: int = 1
    output_stride: int = 16
    mode: Mode = "infer"
    device: str = "cpu"
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    compile_mode: str | None = None
    fast: bool = False
    fast_backend: str = "auto"
    reference: bool = False
    scaling: bool = False
    warmup: int = 2
    repeats: int = 3
    rounds: int = 5
    num_classes: int = 21
    encoder_kwargs: dict[str, Any] = field(default_factory=dict)
    threads: int | None = None

    def settings(self) -> list[tuple[tuple[int, int], int]]:
        """The (size, output stride) pairs to measure, in order."""
        if not self.scaling:
            return [(size, self.output_stride) for size in self.sizes]
        pairs = [((s, s), self.output_stride) for s in SCALING_SIZES]
        pairs += [(self.sizes[0], os_) for os_ in SCALING_STRIDES]
        return list(dict.fromkeys(pairs))


@dataclass
class BenchmarkRow:
    """One measured (or failed) candidate at one setting; ``error`` says why a row has no timings."""

    model: str
    impl: str
    part: str
    size: str
    batch_size: int
    output_stride: int
    mode: str
    device: str
    precision: str
    channels_last: bool
    compiled: bool
    timed: str
    params_m: float | None = None
    gmacs: float | None = None
    latency_ms: float | None = None
    p90_ms: float | None = None
    throughput: float | None = None
    peak_mem_mb: float | None = None
    memory: str = ""
    speedup: float | None = None
    versus: str | None = None
    rounds: int = 0
    samples: int = 0
    error: str | None = None


# ----------------------------------------------------------------------------------------------------------------------
# Parsing


def parse_size(text: str) -> tuple[int, int]:
    """``"512"`` -> (512, 512); ``"512x1024"`` -> (512, 1024) (height x width)."""
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or any(v < 1 for v in values):
        raise BenchmarkError(f"--size: expected N or HxW with positive integers, got {text!r}")
    return (values[0], values[-1])


def parse_model_spec(spec: str) -> tuple[str, str | None]:
    """``"xception65:deeplabv3plus"`` -> ("xception65", "deeplabv3plus"); ``"resnet50"`` -> ("resnet50", None)."""
    from zoo.decoders import list_decoders

    encoder, _, decoder = spec.partition(":")
    if not encoder or (":" in spec and not decoder):
        raise BenchmarkError(f"--models: expected ENCODER or ENCODER:DECODER, got {spec!r}")
    if decoder and decoder not in list_decoders():
        raise BenchmarkError(f"--models: unknown decoder {decoder!r} in {spec!r}; valid decoders: {list_decoders()}")
    return encoder, decoder or None


def parse_kwargs(items: Sequence[str]) -> dict[str, Any]:
    """``["width=0.125", "order='pointwise_first'"]`` -> {"width": 0.125, "order": "pointwise_first"}."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise BenchmarkError(f"--encoder-kwargs: expected KEY=VALUE, got {item!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Candidates


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an out-of-memory error (CUDA or host)."""
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _describe(error: BaseException) -> str:
    if is_out_of_memory(error):
        return "out of memory"
    first = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {first}"[:200]


def _tensor_bytes(tensors: Iterator[torch.Tensor]) -> int:
    seen: set[int] = set()
    total = 0
    for t in tensors:
        if isinstance(t, torch.Tensor) and id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def _loss(output: Any, target: torch.Tensor) -> torch.Tensor:
    if isinstance(output, dict):
        output = output["out"]
    if isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[-2:] == target.shape[-2:]:
        return F.cross_entropy(output.float(), target)
    return sum(t.float().mean() for t in pytree.tree_leaves(output))  # features of an encoder alone


@dataclass
class Candidate:
    """One implementation to time at one setting: ``run()`` does one forward pass or one training step.

    Args:
        impl: label ("zoo", "zoo fast (onnxruntime)", "smp", "timm").
        part: "model" or "encoder".
        module: the network (for parameters and multiply-adds).
        size: input (height, width).
        runner: what one run calls (the module, its compiled version, or an optimised callable).
    """

    impl: str
    part: str
    module: nn.Module
    size: tuple[int, int]
    runner: Callable[[torch.Tensor], Any]
    inputs: torch.Tensor | None = None
    mode: Mode = "infer"
    precision: str = "fp32"
    target: torch.Tensor | None = None
    optimizer: torch.optim.Optimizer | None = None
    versus: str | None = None
    times: list[list[float]] = field(default_factory=list)
    peak_bytes: int = 0
    error: str | None = None
    params: int | None = None
    macs: int | None = None

    def _autocast(self):
        if self.precision == "fp32":
            return nullcontext()
        return torch.autocast(device_type=self.inputs.device.type, dtype=PRECISIONS[self.precision])

    def run(self) -> None:
        """One timed unit: a forward pass without gradients, or a full training step."""
        if self.mode == "infer":
            with torch.inference_mode(), self._autocast():
                self.runner(self.inputs)
            return
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            loss = _loss(self.runner(self.inputs), self.target)
        loss.backward()
        self.optimizer.step()

    def resident_bytes(self) -> int:
        """Bytes the candidate keeps between runs: parameters, buffers, gradients, optimizer state."""
        tensors = [*self.module.parameters(), *self.module.buffers()]
        tensors += [p.grad for p in self.module.parameters() if p.grad is not None]
        if self.optimizer is not None:
            tensors += [t for state in self.optimizer.state.values() for t in state.values()]
        return _tensor_bytes(iter(tensors))


def _timm_name(encoder: str) -> str:
    if encoder.startswith("tu-"):
        return encoder[3:]
    return TIMM_NAMES.get(encoder, encoder)


def _smp_encoder_name(encoder: str) -> str:
    if encoder in TIMM_NAMES:
        return "tu-" + TIMM_NAMES[encoder]
    return encoder


def build_zoo(encoder: str, decoder: str | None, config: BenchmarkConfig, output_stride: int) -> nn.Module:
    """The zoo's model (``decoder`` given) or encoder alone; a bad name raises :class:`BenchmarkError`."""
    from zoo.encoders import build_encoder
    from zoo.models import build_model

    kwargs = dict(config.encoder_kwargs)
    try:
        if decoder is None:
            return build_encoder(encoder, output_stride=output_stride, **kwargs)
        return build_model(
            encoder, decoder, num_classes=config.num_classes, output_stride=output_stride, encoder_kwargs=kwargs
        )
    except KeyError as error:
        raise BenchmarkError(f"--models: {error.args[0] if error.args else error}") from None


def build_smp(encoder: str, decoder: str, config: BenchmarkConfig, output_stride: int) -> nn.Module:
    """smp's model of the same architecture (e.g. ``DeepLabV3Plus(encoder_name="tu-xception65")``)."""
    import segmentation_models_pytorch as smp

    if decoder not in SMP_DECODERS:
        raise ValueError(f"smp has no {decoder} decoder")
    cls = getattr(smp, SMP_DECODERS[decoder])
    kwargs: dict[str, Any] = {"encoder_name": _smp_encoder_name(encoder), "encoder_weights": None}
    if decoder in ("deeplabv3plus", "deeplabv3"):
        kwargs["encoder_output_stride"] = output_stride
    elif output_stride != 32:
        raise ValueError(f"smp's {SMP_DECODERS[decoder]} runs at output stride 32 only")
    return cls(classes=config.num_classes, **kwargs)


def build_timm(encoder: str, output_stride: int) -> nn.Module:
    """timm's ``features_only`` encoder of the same architecture."""
    import timm

    kwargs = {"output_stride": output_stride} if output_stride != 32 else {}
    return timm.create_model(_timm_name(encoder), pretrained=False, features_only=True, **kwargs)


# ----------------------------------------------------------------------------------------------------------------------
# Measuring


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
    candidate.error = _describe(error)
    candidate.runner = None  # type: ignore[assignment]
    candidate.optimizer = None
    if device.type == "cuda":
        torch.cuda.empty_cache()


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
    candidate.precision = config.precision
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


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _row(candidate: Candidate, spec: str, config: BenchmarkConfig, device: torch.device, os_: int) -> BenchmarkRow:
    row = _setting_row(spec, candidate.impl, candidate.part, candidate.size, os_, config, device, candidate.error)
    row.timed = "forward" if config.mode == "infer" else "train step (forward+loss+backward+SGD)"
    row.params_m = None if candidate.params is None else candidate.params / 1e6
    row.gmacs = None if candidate.macs is None else candidate.macs / 1e9
    row.versus = candidate.versus
    samples = [t for round_times in candidate.times for t in round_times]
    if samples and candidate.error is None:
        row.latency_ms = statistics.median(samples)
        row.p90_ms = _percentile(samples, 0.9)
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


def _group_candidates(
    spec: str, size: tuple[int, int], os_: int, config: BenchmarkConfig, device: torch.device
) -> tuple[list[Candidate], list[BenchmarkRow]]:
    """The candidates of one setting, and rows for those that failed to build."""
    encoder, decoder = parse_model_spec(spec)
    torch.manual_seed(0)
    failed: list[tuple[str, str, str]] = []
    candidates: list[Candidate] = []
    part = "encoder" if decoder is None else "model"
    zoo_module = build_zoo(encoder, decoder, config, os_).to(device)
    model_ref = "smp" if config.reference and decoder is not None else None
    enc_ref = "timm" if config.reference else None
    candidates.append(Candidate("zoo", part, zoo_module, size, zoo_module, versus=model_ref or enc_ref))

    def add(impl: str, cpart: str, make: Callable[[], nn.Module], versus: str | None) -> None:
        try:
            module = make().to(device)
            candidates.append(Candidate(impl, cpart, module, size, module, versus=versus))
        except Exception as error:
            failed.append((impl, cpart, _describe(error)))

    if config.reference:
        if decoder is not None:
            add("smp", "model", lambda: build_smp(encoder, decoder, config, os_), "smp")
            encoder_module = zoo_module.encoder
            candidates.append(Candidate("zoo", "encoder", encoder_module, size, encoder_module, versus="timm"))
        add("timm", "encoder", lambda: build_timm(encoder, os_), "timm")
    for candidate in candidates:
        if config.channels_last:
            candidate.module.to(memory_format=torch.channels_last)
        if config.compile:
            candidate.runner = torch.compile(candidate.module, mode=config.compile_mode)
        if config.mode == "infer":
            candidate.module.eval()
    if config.fast:
        if config.mode != "infer":
            raise BenchmarkError("--fast: the fast path is for --mode infer only")
        fast = _fast_candidate(zoo_module, part, size, config, device, versus=model_ref or enc_ref or "zoo")
        candidates.insert(1, fast)
    rows = [_setting_row(spec, impl, cpart, size, os_, config, device, message) for impl, cpart, message in failed]
    return candidates, rows


def _fast_candidate(
    module: nn.Module, part: str, size: tuple[int, int], config: BenchmarkConfig, device: torch.device, versus: str
) -> Candidate:
    from zoo.optimize import optimize_for_inference

    example = torch.randn(config.batch_size, 3, *size, device=device)
    try:
        optimized = optimize_for_inference(
            module.eval(),
            example,
            backend=config.fast_backend,  # type: ignore[arg-type]
            precision=config.precision,  # type: ignore[arg-type]
            channels_last=True if config.channels_last else None,
            compile_mode=config.compile_mode,
            num_threads=config.threads,
        )
    except Exception as error:
        candidate = Candidate("zoo fast", part, module, size, None, versus=versus)  # type: ignore[arg-type]
        candidate.error = _describe(error)
        return candidate
    return Candidate(f"zoo fast ({optimized.backend})", part, module, size, optimized, versus=versus)


def run_benchmark(config: BenchmarkConfig, *, progress: Callable[[str], None] | None = None) -> list[BenchmarkRow]:
    """Measure every model spec at every setting of ``config``; one row per candidate and setting.

    An error at one setting (an out-of-memory above all) is reported in that setting's rows.

    Args:
        config: what to measure.
        progress: called with a short line before each setting (e.g. ``print``).

    Raises:
        BenchmarkError: a bad argument (unknown model or decoder, unavailable device, bad counts).
    """
    _check_config(config)
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
                candidates, failed = _group_candidates(spec, size, os_, config, device)
            except BenchmarkError:
                raise
            except Exception as error:  # the zoo model itself cannot be built at this setting
                part = "model" if parse_model_spec(spec)[1] else "encoder"
                rows.append(_setting_row(spec, "zoo", part, size, os_, config, device, _describe(error)))
                continue
            measure(candidates, config, device)
            group = [_row(c, spec, config, device, os_) for c in candidates]
            _speedups(candidates, group)
            rows.extend(group + failed)
            del candidates
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def _setting_row(
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


def _check_config(config: BenchmarkConfig) -> None:
    if not config.models:
        raise BenchmarkError("--models: give at least one model or encoder")
    for name in ("batch_size", "repeats", "rounds"):
        if getattr(config, name) < 1:
            raise BenchmarkError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(config, name)}")
    if config.warmup < 0:
        raise BenchmarkError(f"--warmup must be at least 0, got {config.warmup}")
    if config.output_stride not in (8, 16, 32):
        raise BenchmarkError(f"--output-stride must be 8, 16 or 32, got {config.output_stride}")
    if config.mode not in ("infer", "train"):
        raise BenchmarkError(f"--mode must be infer or train, got {config.mode!r}")
    if config.precision not in PRECISIONS:
        raise BenchmarkError(f"--precision must be one of {list(PRECISIONS)}, got {config.precision!r}")
    if config.threads is not None and config.threads < 1:
        raise BenchmarkError(f"--threads must be at least 1, got {config.threads}")
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise BenchmarkError(f"--device {config.device}: CUDA is not available on this machine")
    if config.fast and config.mode != "infer":
        raise BenchmarkError("--fast: the fast path is for --mode infer only")


# ----------------------------------------------------------------------------------------------------------------------
# Output


def machine_description(device: str | torch.device = "cpu", threads: int | None = None) -> str:
    """CPU model and thread count, or the GPU's name as ``torch.cuda.get_device_name`` reports it.

    Args:
        device: the device measured.
        threads: the intra-op threads used (default: ``torch.get_num_threads()``).
    """
    device = torch.device(device)
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    threads = threads or torch.get_num_threads()
    return f"{cpu}, {os.cpu_count()} logical cores, {threads} torch threads, torch {torch.__version__}"


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


TABLE_COLUMNS = (
    ("model", "model"),
    ("impl", "impl"),
    ("part", "part"),
    ("size", "size"),
    ("batch", "batch_size"),
    ("OS", "output_stride"),
    ("params (M)", "params_m"),
    ("GMACs/img", "gmacs"),
    ("median ms", "latency_ms"),
    ("p90 ms", "p90_ms"),
    ("img/s", "throughput"),
    ("peak MB", "peak_mem_mb"),
    ("speed-up", "speedup"),
    ("note", "error"),
)


def table_cells(row: BenchmarkRow) -> list[str]:
    """The row as the strings of :data:`TABLE_COLUMNS`."""
    cells = []
    for _, key in TABLE_COLUMNS:
        value = getattr(row, key)
        if key == "speedup":
            cells.append("-" if value is None else f"{value:.2f}x vs {row.versus}")
        elif key == "throughput":
            cells.append(_fmt(value, 2))
        elif key in ("params_m", "gmacs", "latency_ms", "p90_ms", "peak_mem_mb"):
            cells.append(_fmt(value, 1 if key != "params_m" else 2))
        elif key == "error":
            cells.append(value or "")
        else:
            cells.append(str(value))
    return cells


def print_table(rows: Sequence[BenchmarkRow], *, title: str | None = None, file=None) -> None:
    """A rich table of ``rows`` on the terminal (or ``file``)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for header, key in TABLE_COLUMNS:
        table.add_column(header, justify="left" if key in ("model", "impl", "part", "size", "error") else "right")
    for row in rows:
        table.add_row(*table_cells(row))
    Console(file=file, width=200).print(table)


def markdown_table(rows: Sequence[BenchmarkRow]) -> str:
    """``rows`` as a GitHub markdown table (what BENCHMARKS.md holds)."""
    lines = ["| " + " | ".join(h for h, _ in TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(table_cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def write_csv(rows: Sequence[BenchmarkRow], path: str | Path) -> Path:
    """Write ``rows`` as CSV (one column per :class:`BenchmarkRow` field)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [f.name for f in dataclasses.fields(BenchmarkRow)]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        for row in rows:
            writer.writerow(dataclasses.asdict(row))
    return path


def write_json(rows: Sequence[BenchmarkRow], path: str | Path, config: BenchmarkConfig | None = None) -> Path:
    """Write ``{"machine", "config", "rows"}`` as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": machine_description(config.device, config.threads) if config else machine_description(),
        "config": dataclasses.asdict(config) if config else None,
        "rows": [dataclasses.asdict(r) for r in rows],
    }
    path.write_text(json.dumps(payload, indent=2))
    return path


def plot_rows(rows: Sequence[BenchmarkRow], path: str | Path) -> Path:
    """Latency against GMACs and against parameters (plus, with several sizes, latency and memory against size)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r.latency_ms is not None]
    sizes = {r.size for r in done}
    panels = 4 if len(sizes) > 1 else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.8))
    groups: dict[str, list[BenchmarkRow]] = {}
    for row in done:
        groups.setdefault(f"{row.model} {row.impl} ({row.part})", []).append(row)
    ylabel = f"{'train step' if done and done[0].mode == 'train' else 'latency'} median (ms)"
    for key, ax, xlabel in (("gmacs", axes[0], "GMACs per image"), ("params_m", axes[1], "parameters (M)")):
        for label, items in groups.items():
            ax.scatter([getattr(r, key) for r in items], [r.latency_ms for r in items], s=30, label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    if panels == 4:
        series: dict[str, list[BenchmarkRow]] = {}
        for row in done:
            series.setdefault(f"{row.model} {row.impl} {row.part} OS{row.output_stride}", []).append(row)
        for label, items in series.items():
            items.sort(key=lambda r: _pixels(r.size))
            pixels = [_pixels(r.size) / 1e6 for r in items]
            axes[2].plot(pixels, [r.latency_ms for r in items], marker="o", label=label)
            axes[3].plot(pixels, [r.peak_mem_mb for r in items], marker="o", label=label)
        for ax, ylabel in ((axes[2], "latency median (ms)"), (axes[3], "peak memory (MB)")):
            ax.set_xlabel("input megapixels")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6)
    fig.suptitle(f"zoo benchmark ({done[0].device if done else ''})", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _pixels(size: str) -> int:
    h, w = size.split("x")
    return int(h) * int(w)


# ----------------------------------------------------------------------------------------------------------------------
# Command line


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``zoo benchmark`` to the ``zoo`` command."""
    p = subparsers.add_parser(
        "benchmark",
        help="latency, throughput, memory, parameters and MACs of encoders and models",
        description="Time encoders (ENCODER) and models (ENCODER:DECODER), optionally against smp and timm.",
    )
    p.add_argument("--models", nargs="+", required=True, metavar="SPEC", help="e.g. xception65:deeplabv3plus resnet50")
    p.add_argument("--size", nargs="+", default=["512"], metavar="HxW", help="input sizes, N or HxW (default 512)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--output-stride", type=int, default=16, choices=(8, 16, 32))
    p.add_argument("--mode", choices=("infer", "train"), default="infer")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--precision", choices=tuple(PRECISIONS), default="fp32")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile every candidate")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode (e.g. max-autotune)")
    p.add_argument("--fast", action="store_true", help="add the zoo's fast inference path (optimize_for_inference)")
    p.add_argument("--fast-backend", choices=BACKENDS, default="auto")
    p.add_argument("--reference", action="store_true", help="time smp's model and timm's encoder alongside")
    p.add_argument("--scaling", action="store_true", help="sweep input sizes 256..1024 and output strides 8/16/32")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs per candidate (default 2)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per candidate per round (default 3)")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    p.add_argument("--num-classes", type=int, default=21)
    p.add_argument("--encoder-kwargs", nargs="*", default=[], metavar="KEY=VALUE", help="e.g. width=0.25")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (torch and ONNX Runtime)")
    p.add_argument("--csv", type=Path, default=None, metavar="FILE")
    p.add_argument("--json", type=Path, default=None, metavar="FILE")
    p.add_argument("--plot", type=Path, default=None, metavar="FILE", help="PNG: latency vs GMACs and vs params")
    p.add_argument("--markdown", type=Path, default=None, metavar="FILE", help="also write the table as markdown")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> BenchmarkConfig:
    """A :class:`BenchmarkConfig` from parsed ``zoo benchmark`` arguments."""
    return BenchmarkConfig(
        models=list(args.models),
        sizes=[parse_size(s) for s in args.size],
        batch_size=args.batch_size,
        output_stride=args.output_stride,
        mode=args.mode,
        device=args.device,
        precision=args.precision,
        channels_last=args.channels_last,
        compile=args.compile,
        compile_mode=args.compile_mode,
        fast=args.fast,
        fast_backend=args.fast_backend,
        reference=args.reference,
        scaling=args.scaling,
        warmup=args.warmup,
        repeats=args.repeats,
        rounds=args.rounds,
        num_classes=args.num_classes,
        encoder_kwargs=parse_kwargs(args.encoder_kwargs),
        threads=args.threads,
    )


def run(args: argparse.Namespace) -> int:
    """``zoo benchmark``: exit code 0, 1 when a zoo row failed for a reason other than memory, 2 for bad input."""
    try:
        config = config_from_args(args)
        rows = run_benchmark(config, progress=lambda line: print(line, file=sys.stderr, flush=True))
    except BenchmarkError as error:
        print(f"zoo benchmark: error: {error}", file=sys.stderr)
        return 2
    machine = machine_description(config.device, config.threads)
    print_table(rows, title=f"zoo benchmark on {machine} (peak memory: {memory_kind(torch.device(config.device))})")
    if args.csv:
        print(f"wrote {write_csv(rows, args.csv)}")
    if args.json:
        print(f"wrote {write_json(rows, args.json, config)}")
    if args.plot:
        print(f"wrote {plot_rows(rows, args.plot)}")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(f"Machine: {machine}\n\n{markdown_table(rows)}\n")
        print(f"wrote {args.markdown}")
    failed = [r for r in rows if r.impl.startswith("zoo") and r.error and r.error != "out of memory"]
    return 1 if failed else 0
