"""A fast inference path: BatchNorm folding, channels-last, ONNX Runtime and ``torch.compile``; int8 and bf16.

``optimize_for_inference(model, example_input=x)`` returns an :class:`OptimizedModel`, a callable with
the model's outputs (max abs difference at most 1e-3 in fp32, checked at build time) that runs
faster. It folds every BatchNorm that directly follows a convolution into that convolution, then
builds the candidate back-ends, checks each against the model on ``example_input`` and keeps the
fastest:

- ``"onnxruntime"``: the folded model exported with ``torch.onnx`` and run by ONNX Runtime with all its
  graph optimisations (CPU only; a fixed-shape graph for each of the first input shapes, then one graph
  with dynamic sizes for all others, see :class:`OnnxRuntimeRunner`);
- ``"compile"``: ``torch.compile`` of the folded model (bf16 on the CPU: under autocast, channels-last, with
  Inductor's freezing);
- ``"torchao"``: int8 through torchao's PT2E flow with the x86 Inductor quantizer, compiled with freezing (CPU; the
  optional ``torchao`` extra, see :mod:`zoo.infer.torchao_int8`);
- ``"openvino"``: the folded model run by OpenVINO (CPU; fp32, bf16, int8 through NNCF; the optional ``openvino``
  extra, see :mod:`zoo.infer.openvino`);
- ``"eager"``: the folded model itself, in channels-last memory format where that is faster.

``backend="auto"`` measures ONNX Runtime, OpenVINO (where installed) and eager on the CPU, ``torch.compile``
against eager on CUDA (on this project's 2-core CPU ``torch.compile`` gave no gain, and channels-last was slower),
and remembers the choice (:mod:`zoo.infer.engines`): the next build for the same CPU, weights, input shape,
precision and threads builds only the remembered engine.

``precision="int8"`` (CPU: ONNX Runtime, OpenVINO or torchao) quantizes every graph the back-end builds, with
activation ranges calibrated once on the ``calibration`` images (see :mod:`zoo.infer.quantize`); its accuracy
is measured by :func:`zoo.infer.quantize.quantization_report`, not by the build-time check. ``precision="bf16"``
runs the torch back-ends under ``torch.autocast`` and, on the CPU, needs a CPU with native bf16 instructions.
"""

from __future__ import annotations

import copy
import statistics
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any, Literal

import torch
from torch import nn
from torch.utils import _pytree as pytree

from zoo.infer import engines
from zoo.infer.fold import count_batchnorms, fold_batchnorm
from zoo.infer.onnx import OnnxRuntimeRunner, max_abs_difference
from zoo.infer.openvino import OpenVinoRunner
from zoo.infer.precision import check_precision
from zoo.infer.quantize import Calibration, QuantizedRunner, calibration_batches
from zoo.infer.torchao_int8 import TorchaoRunner

Backend = Literal["auto", "onnxruntime", "openvino", "torchao", "compile", "eager"]
Precision = Literal["fp32", "bf16", "fp16", "int8"]
AGREEMENT_IMAGES = 8  # int8 "auto": the calibration images each engine's classes are compared on
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}  # torch.autocast dtypes


# ----------------------------------------------------------------------------------------------------------------------
# Back-ends


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=PRECISIONS[precision])


class _TorchRunner:
    """Runs a torch module (eager or compiled) without gradients, under autocast for bf16/fp16."""

    def __init__(self, module: Callable, device: torch.device, precision: str, channels_last: bool) -> None:
        self.module = module
        self.device = device
        self.precision = precision
        self.channels_last = channels_last

    def __call__(self, x: torch.Tensor) -> Any:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), _autocast(self.device, self.precision):
            return self.module(x)


# ----------------------------------------------------------------------------------------------------------------------
# The public entry point


class OptimizedModel:
    """A callable with a model's outputs, made by :func:`optimize_for_inference`.

    Attributes:
        backend: the back-end in use ("onnxruntime", "compile", "eager" or "eager+channels_last").
        timings_ms: median latency of each candidate measured at build time (ms) on the example input.
        max_abs_diff: each candidate's max abs difference from the original model on the example input.
        folded_batchnorms: how many BatchNorms were folded into convolutions.
        precision: "fp32", "bf16", "fp16" or "int8".
        folded_model: the folded fp32 module the back-end runs or was exported from.
    """

    def __init__(
        self,
        runner: Callable[[torch.Tensor], Any],
        backend: str,
        timings_ms: dict[str, float],
        max_abs_diff: dict[str, float],
        folded_batchnorms: int,
        *,
        precision: str = "fp32",
        folded_model: nn.Module | None = None,
    ) -> None:
        self.runner = runner
        self.backend = backend
        self.timings_ms = timings_ms
        self.max_abs_diff = max_abs_diff
        self.folded_batchnorms = folded_batchnorms
        self.precision = precision
        self.folded_model = folded_model

    @property
    def calibration_images(self) -> int | None:
        """int8: how many images the activation ranges were calibrated on (else None)."""
        return getattr(self.runner, "calibration_images", None)

    @property
    def calibration_ranges(self) -> dict[str, tuple[float, float]] | None:
        """int8: each quantized tensor's calibrated (min, max) (else None)."""
        return getattr(self.runner, "ranges", None)

    def __call__(self, x: torch.Tensor) -> Any:
        return self.runner(x)

    def __repr__(self) -> str:
        return (
            f"OptimizedModel(backend={self.backend!r}, precision={self.precision!r}, "
            f"folded_batchnorms={self.folded_batchnorms})"
        )


def _median_ms(fns: dict[str, Callable[[], Any]], warmup: int, trials: int) -> dict[str, float]:
    """Each ``fn``'s median over ``trials`` single runs in ms, the candidates alternating run by run (so a burst of
    load on a shared machine hits them alike), at torch's thread count (``torch.utils.benchmark.Timer``, which
    synchronises CUDA, would otherwise time torch at one thread)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    from torch.utils.benchmark import Timer  # heavy (imports setuptools): only when candidates are timed

    timers = {n: Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads()) for n, fn in fns.items()}
    runs: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(trials):
        for name, timer in timers.items():
            runs[name].append(timer.timeit(1).mean * 1e3)
    return {name: statistics.median(values) for name, values in runs.items()}


def _candidates(backend: str, device: torch.device, channels_last: bool | None, precision: str) -> list[str]:
    names = engines.candidates(precision, device.type) if backend == "auto" else [backend]
    if "eager" in names and (channels_last or (channels_last is None and device.type == "cuda")):
        names.insert(names.index("eager") + 1, "eager+channels_last")
        if channels_last:
            names.remove("eager")
    return names


def _build_runner(
    name: str,
    model: nn.Module,
    example_input: torch.Tensor,
    precision: str,
    channels_last: bool | None,
    compile_mode: str | None,
    num_threads: int | None,
    calibration: Calibration | None = None,
    reduce_range: bool | None = None,
) -> Callable[[torch.Tensor], Any]:
    device = example_input.device
    if name == "onnxruntime" and precision == "int8":
        return QuantizedRunner(model, example_input, calibration, num_threads=num_threads, reduce_range=reduce_range)
    if name == "onnxruntime":
        return OnnxRuntimeRunner(model, example_input, num_threads=num_threads)
    if name == "openvino":
        cal = list(calibration) if precision == "int8" else None
        return OpenVinoRunner(model, example_input, precision=precision, calibration=cal, num_threads=num_threads)
    if name == "torchao":
        return TorchaoRunner(model, example_input, list(calibration))
    cpu_bf16 = name == "compile" and device.type == "cpu" and precision == "bf16"
    use_cl = name == "eager+channels_last" or (
        name == "compile" and bool(channels_last or device.type == "cuda" or (cpu_bf16 and channels_last is None))
    )
    module = model.to(memory_format=torch.channels_last) if use_cl else model
    if name == "compile":
        module = torch.compile(module, mode=compile_mode)
    runner = _TorchRunner(module, device, precision, use_cl)
    if cpu_bf16:  # oneDNN's bf16 kernels want the weights as constants: compile now, with freezing
        from torch._inductor import config as inductor_config  # Inductor's switch, loaded only when compiling

        with inductor_config.patch(freezing=True):
            runner(example_input)
    return runner


def optimize_for_inference(
    model: nn.Module,
    example_input: torch.Tensor,
    backend: Backend = "auto",
    *,
    precision: Precision = "fp32",
    calibration: Calibration | None = None,
    reduce_range: bool | None = None,
    fold_bn: bool = True,
    channels_last: bool | None = None,
    compile_mode: str | None = None,
    num_threads: int | None = None,
    tolerance: float | None = None,
    warmup: int = 1,
    trials: int = 3,
    min_agreement: float = 0.9,
    cache_choice: bool = True,
) -> OptimizedModel:
    """A faster callable with ``model``'s outputs, checked against the model on ``example_input``.

    Args:
        model: the network (left unchanged; a copy is optimised).
        example_input: a typical input, on the device to run on; used to find conv-BN pairs, to check
            each back-end's outputs and to time them.
        backend: "auto" (measure the candidates for the device and keep the fastest; remembered, see
            ``cache_choice``), "onnxruntime" (CPU, fp32/int8), "openvino" (CPU, fp32/bf16/int8), "torchao" (CPU,
            int8), "compile" (``torch.compile``) or "eager" (the folded model itself).
        precision: "fp32"; "bf16"/"fp16" through ``torch.autocast`` (torch back-ends; bf16 on the CPU needs
            native bf16 instructions); "int8": static post-training quantization (CPU, ONNX Runtime, QDQ,
            per-channel weights; or OpenVINO through NNCF; or torchao's PT2E flow), calibrated on ``calibration``.
        calibration: int8 only: a folder of images, or an iterable of ``N×3×H×W`` batches of RGB in 0..1 (what
            the model takes; it normalises its input itself). A few dozen images like the data.
        reduce_range: int8 only: 7-bit weights (ONNX Runtime's ``reduce_range``); None: on a CPU without VNNI,
            where 8-bit weights may saturate AVX2's 16-bit sums.
        fold_bn: fold BatchNorms into the convolutions that feed them.
        channels_last: None: try channels-last for eager on CUDA only (and compile on CUDA, and bf16 compile on the
            CPU); True/False: always/never.
        compile_mode: ``mode`` for ``torch.compile`` (e.g. "max-autotune").
        num_threads: ONNX Runtime intra-op threads (default: ``torch.get_num_threads()``).
        tolerance: largest allowed max abs difference from the model on ``example_input``; default
            1e-3 for fp32, 5% of the output's largest magnitude for bf16/fp16, no limit for int8 (whose
            accuracy :func:`zoo.infer.quantize.quantization_report` measures on real images).
        warmup: untimed runs per candidate before timing ("auto" only).
        trials: timed runs per candidate ("auto" only).
        min_agreement: int8 under "auto" with several engines: the least share of pixels whose class agrees with
            the model's, over the first ``AGREEMENT_IMAGES`` calibration images (real images like the data, not the
            example input, which may be random), for an engine to be kept.
        cache_choice: "auto": remember the choice per CPU, weights, input shape, precision and threads
            (:class:`zoo.infer.engines.EngineCache`), and build only the remembered engine next time.

    Raises:
        ArgumentError: (a ValueError) for an unknown backend or precision, a precision this CPU has no instructions
            for, int8 without calibration data or off the CPU (:func:`zoo.infer.precision.check_precision`).
        ValueError: when the requested back-end's outputs differ from the
            model's by more than ``tolerance`` (with "auto" such candidates are skipped).
    """
    if not isinstance(example_input, torch.Tensor):
        raise TypeError(f"example_input must be a tensor, got {type(example_input).__name__}")
    device = example_input.device
    check_precision(precision, device=device, backend=backend, calibration=calibration)
    if precision == "int8":
        calibration = calibration_batches(calibration)  # reads and checks the images before any work
    original = model.eval()
    with torch.inference_mode():
        reference = original(example_input)
    prepared = copy.deepcopy(original).eval()
    before = count_batchnorms(prepared)
    if fold_bn:
        prepared = fold_batchnorm(prepared, example_input, inplace=True)
    folded = before - count_batchnorms(prepared)
    scale = max(abs(leaf).max().item() for leaf in pytree.tree_leaves(reference))
    limit = tolerance if tolerance is not None else (1e-3 if precision == "fp32" else 0.05 * max(1.0, scale))
    if precision == "int8":
        limit = tolerance if tolerance is not None else float("inf")

    names = _candidates(backend, device, channels_last, precision)
    agreement = min_agreement if precision == "int8" and len(names) > 1 else None
    built = _Built(prepared, example_input, reference, limit, agreement, strict=backend != "auto" or len(names) == 1)
    if agreement is not None:
        built.judge_on(original, calibration[:AGREEMENT_IMAGES])
    options = (precision, channels_last, compile_mode, num_threads, calibration, reduce_range)
    cache = key = remembered = None
    if cache_choice and backend == "auto" and len(names) > 1:
        cache = engines.EngineCache()
        threads = num_threads or torch.get_num_threads()
        key = engines.choice_key(original, tuple(example_input.shape), f"{precision}/{reduce_range}", names, threads)
        remembered = cache.get(key, names)
    if remembered is not None:
        built.build([remembered["backend"]], options, time=False)
        built.timings = dict(remembered["timings_ms"])
    if not built.runners:  # no remembered choice, or it fails now: measure every candidate
        built.build(names, options, time=len(names) > 1, warmup=warmup, trials=trials)
        if cache is not None and built.runners:
            cache.put(key, engines.choose(built.timings, set(built.runners)), built.timings)
    if not built.runners:
        raise RuntimeError(f"no back-end could run the model: {built.errors}")
    for name, message in built.errors.items():
        warnings.warn(f"optimize_for_inference skipped {name}: {message}", stacklevel=2)
    best = min(built.runners, key=lambda n: built.timings.get(n, 0.0))
    return OptimizedModel(
        built.runners[best], best, built.timings, built.diffs, folded, precision=precision, folded_model=prepared
    )


def pixel_agreement(reference: Any, output: Any) -> float:
    """The share of pixels whose argmax class (dim 1 of the first output) is the same in both outputs."""
    a, b = pytree.tree_leaves(reference)[0], pytree.tree_leaves(output)[0]
    return (a.argmax(1) == b.to(a.device).argmax(1)).float().mean().item()


class _Built:
    """The candidates built so far: each checked against the reference outputs, then timed."""

    def __init__(self, model, example, reference, limit: float, agreement: float | None, strict: bool) -> None:
        self.model, self.example, self.reference = model, example, reference
        self.limit, self.agreement, self.strict = limit, agreement, strict
        self.runners: dict[str, Callable] = {}
        self.timings: dict[str, float] = {}
        self.diffs: dict[str, float] = {}
        self.errors: dict[str, str] = {}
        self.judged: list[tuple[torch.Tensor, Any]] = [(example, reference)]

    def judge_on(self, model: nn.Module, images: list[torch.Tensor]) -> None:
        """Judge the pixel agreement on ``images`` (with ``model``'s outputs) instead of the example input."""
        with torch.inference_mode():
            self.judged = [(x, model(x)) for x in images] or self.judged

    def agreement_of(self, runner: Callable) -> float:
        """The share of pixels whose class ``runner`` and the model agree on, over the judged images."""
        agree = total = 0.0
        for x, expected in self.judged:
            pixels = pytree.tree_leaves(expected)[0][:, 0].numel()
            agree += pixel_agreement(expected, runner(x)) * pixels
            total += pixels
        return agree / total

    def build(self, names: list[str], options: tuple, time: bool, warmup: int = 1, trials: int = 3) -> None:
        for name in names:
            try:
                runner = _build_runner(name, self.model, self.example, *options)
                output = runner(self.example)
                self.diffs[name] = max_abs_difference(self.reference, output)
            except Exception as error:  # a back-end that cannot run this model is skipped under "auto"
                if self.strict:
                    raise
                self.errors[name] = f"{type(error).__name__}: {error}"
                continue
            message = None
            if self.diffs[name] > self.limit:
                message = (
                    f"backend {name!r} differs from the model by {self.diffs[name]:.3g} > tolerance {self.limit:.3g}"
                )
            elif self.agreement is not None and (share := self.agreement_of(runner)) < self.agreement:
                message = f"backend {name!r} agrees with the model on {share:.1%} of pixels < {self.agreement:.0%}"
            if message:
                if self.strict:
                    raise ValueError(message)
                self.errors[name] = message
                continue
            self.runners[name] = runner
        if time and self.runners:
            fns = {name: (lambda r=runner: r(self.example)) for name, runner in self.runners.items()}
            self.timings.update(_median_ms(fns, warmup, trials))
