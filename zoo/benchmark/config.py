"""What ``zoo benchmark`` measures: its configuration, its rows, and the parsing and checking of arguments."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from zoo.decoders import list_decoders
from zoo.errors import ArgumentError
from zoo.infer.device import resolve_device
from zoo.infer.precision import check_precision

Mode = Literal["infer", "train"]
SCALING_SIZES = (256, 384, 512, 768, 1024)
SCALING_STRIDES = (8, 16, 32)


class BenchmarkError(ArgumentError):
    """A bad benchmark argument (unknown model, size, ...); it names the :class:`BenchmarkConfig` field."""


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
        precision: "fp32", or "bf16"/"fp16" through ``torch.autocast`` for every candidate, or "int8" (CPU,
            inference): the fast path quantized (implies ``fast``, as everywhere; the other candidates run fp32, as
            the reference). Checked by :func:`zoo.infer.precision.check_precision`.
        channels_last: run every candidate in channels-last memory format.
        compile: ``torch.compile`` every candidate (its compilation happens during warm-up).
        compile_mode: ``mode`` for ``torch.compile``.
        fast: add the zoo's fast inference path (:func:`zoo.infer.optimize.optimize_for_inference`), infer only.
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
        calibration: int8: a folder of images to calibrate on; None: two random images of the input size
            (enough for timing, which does not depend on the ranges; accuracy is not measured here).
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
    calibration: str | None = None

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


def parse_model_spec(spec: str) -> tuple[str, str | None]:
    """``"xception65:deeplabv3plus"`` -> ("xception65", "deeplabv3plus"); ``"resnet50"`` -> ("resnet50", None)."""
    encoder, _, decoder = spec.partition(":")
    if not encoder or (":" in spec and not decoder):
        raise BenchmarkError("models", f"expected ENCODER or ENCODER:DECODER, got {spec!r}")
    if decoder and decoder not in list_decoders():
        raise BenchmarkError("models", f"unknown decoder {decoder!r} in {spec!r}; valid decoders: {list_decoders()}")
    return encoder, decoder or None


def check_config(config: BenchmarkConfig) -> None:
    """Raise a :class:`BenchmarkError` (or the shared precision/device errors) naming the field that cannot run."""
    if not config.models:
        raise BenchmarkError("models", "give at least one model or encoder")
    if not config.sizes or any(len(s) != 2 or min(s) < 1 for s in config.sizes):
        raise BenchmarkError("sizes", f"expected (height, width) pairs of positive integers, got {config.sizes}")
    for name in ("batch_size", "repeats", "rounds"):
        if getattr(config, name) < 1:
            raise BenchmarkError(name, f"must be at least 1, got {getattr(config, name)}")
    if config.warmup < 0:
        raise BenchmarkError("warmup", f"must be at least 0, got {config.warmup}")
    if config.output_stride not in (8, 16, 32):
        raise BenchmarkError("output_stride", f"must be 8, 16 or 32, got {config.output_stride}")
    if config.mode not in ("infer", "train"):
        raise BenchmarkError("mode", f"must be 'infer' or 'train', got {config.mode!r}")
    if config.threads is not None and config.threads < 1:
        raise BenchmarkError("threads", f"must be at least 1, got {config.threads}")
    resolve_device(config.device)
    check_precision(
        config.precision,
        device=config.device,
        backend=config.fast_backend,
        calibration=config.calibration,
        needs_calibration=False,
    )
    if config.mode != "infer" and (config.fast or config.precision == "int8"):
        raise BenchmarkError("mode", "the fast path (fast, precision 'int8') runs inference only: mode 'infer'")
