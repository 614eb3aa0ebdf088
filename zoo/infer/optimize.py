"""A fast inference path: BatchNorm folding, channels-last, ONNX Runtime and ``torch.compile``; int8 and bf16.

``optimize_for_inference(model, example_input=x)`` returns an :class:`OptimizedModel`, a callable with
the model's outputs (max abs difference at most 1e-3 in fp32, checked at build time) that runs
faster. It folds every BatchNorm that directly follows a convolution into that convolution, then
builds the candidate back-ends, checks each against the model on ``example_input`` and keeps the
fastest:

- ``"onnxruntime"``: the folded model exported with ``torch.onnx`` and run by ONNX Runtime with all its
  graph optimisations (CPU only; a fixed-shape graph for each of the first input shapes, then one graph
  with dynamic sizes for all others, see :class:`OnnxRuntimeRunner`);
- ``"compile"``: ``torch.compile`` of the folded model;
- ``"eager"``: the folded model itself, in channels-last memory format where that is faster.

``backend="auto"`` measures ONNX Runtime against eager on the CPU and ``torch.compile`` against eager
on CUDA (on this project's 2-core CPU ``torch.compile`` gave no gain, and channels-last was slower).

``precision="int8"`` (CPU, ONNX Runtime) quantizes every graph the ONNX Runtime back-end builds, with
activation ranges calibrated once on the ``calibration`` images (see :mod:`zoo.infer.quantize`); its accuracy
is measured by :func:`zoo.infer.quantize.quantization_report`, not by the build-time check. ``precision="bf16"``
runs the torch back-ends under ``torch.autocast`` and, on the CPU, needs a CPU with native bf16 instructions.
"""

from __future__ import annotations

import copy
import statistics
import warnings
from collections import OrderedDict
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any, Literal

import torch
from torch import nn
from torch.utils import _pytree as pytree

from zoo.infer.fold import count_batchnorms, fold_batchnorm
from zoo.infer.onnx import onnx_bytes, ort_session
from zoo.infer.precision import check_precision
from zoo.infer.quantize import Calibration, QuantizedRunner, calibration_batches

Backend = Literal["auto", "onnxruntime", "compile", "eager"]
Precision = Literal["fp32", "bf16", "fp16", "int8"]
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


class OnnxRuntimeRunner:
    """Runs a module through ONNX Runtime on the CPU.

    The first ``max_sessions`` input shapes each get a graph fixed to that shape (exported on first use;
    the fastest to run). Further shapes share one graph with dynamic batch, height and width, exported
    once at an odd size (so that a model's padding to a multiple of its stride stays in the graph) and
    checked against the module on the first shape it serves; where that check fails, each further shape
    gets a fixed graph of its own, the least recently used ones dropped.

    Args:
        model: the (folded) module, on the CPU, in eval mode.
        example_input: an input whose shape gets a session now.
        num_threads: ONNX Runtime's intra-op threads (default: ``torch.get_num_threads()``).
        max_sessions: how many shapes get a fixed-shape graph.
        tolerance: largest max abs difference allowed between the dynamic graph and the module.
    """

    def __init__(
        self,
        model: nn.Module,
        example_input: torch.Tensor,
        *,
        num_threads: int | None = None,
        max_sessions: int = 4,
        tolerance: float = 1e-3,
    ) -> None:
        self.model = model.cpu().eval()
        self.num_threads = num_threads or torch.get_num_threads()
        self.max_sessions = max_sessions
        self.tolerance = tolerance
        self.sessions: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self.dynamic_session: Any = None
        self.dynamic_ok: bool | None = None  # None: not tried yet
        with torch.no_grad():
            self.spec = pytree.tree_structure(self.model(example_input.cpu().float()))
        self._session(example_input)

    def _build(self, model: bytes) -> Any:
        return ort_session(model, num_threads=self.num_threads)

    def _session(self, x: torch.Tensor) -> Any:
        key = tuple(x.shape)
        if key in self.sessions:
            self.sessions.move_to_end(key)
            return self.sessions[key]
        if len(self.sessions) >= self.max_sessions:
            if self.dynamic_ok is None:
                self.dynamic_ok = self._try_dynamic(x)
            if self.dynamic_ok:
                return self.dynamic_session
        self.sessions[key] = self._build(onnx_bytes(self.model, x.detach().cpu().float()))
        while len(self.sessions) > max(1, self.max_sessions):
            self.sessions.popitem(last=False)
        return self.sessions[key]

    def _try_dynamic(self, x: torch.Tensor) -> bool:
        x = x.detach().cpu().float()
        odd = torch.randn(1, x.shape[1], 65, 91, generator=torch.Generator().manual_seed(0))
        try:
            session = self._build(onnx_bytes(self.model, odd, dynamic=True))
            with torch.no_grad():
                expected = self.model(x)
            if max_abs_difference(expected, self._run(session, x)) > self.tolerance:
                return False
        except Exception:  # a module that cannot be exported with dynamic sizes keeps fixed-shape graphs
            return False
        self.dynamic_session = session
        return True

    def _run(self, session: Any, x: torch.Tensor) -> Any:
        array = x.detach().cpu().float().contiguous().numpy()
        outputs = session.run(None, {session.get_inputs()[0].name: array})
        tensors = [torch.from_numpy(o).to(x.device) for o in outputs]
        return pytree.tree_unflatten(tensors, self.spec)

    def __call__(self, x: torch.Tensor) -> Any:
        return self._run(self._session(x), x)


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


def max_abs_difference(a: Any, b: Any) -> float:
    """Largest absolute difference between two (nested) tensor outputs of the same structure."""
    leaves_a, spec_a = pytree.tree_flatten(a)
    leaves_b, spec_b = pytree.tree_flatten(b)
    if spec_a != spec_b:
        raise ValueError(f"outputs differ in structure: {spec_a} vs {spec_b}")
    diffs = [(x.float() - y.float().to(x.device)).abs().max().item() for x, y in zip(leaves_a, leaves_b, strict=True)]
    return max(diffs, default=0.0)


def _median_ms(fn: Callable[[], Any], warmup: int, trials: int) -> float:
    """Median of ``trials`` single runs of ``fn`` in ms (``torch.utils.benchmark.Timer`` synchronises CUDA)."""
    for _ in range(warmup):
        fn()
    from torch.utils.benchmark import Timer  # heavy (imports setuptools): only when candidates are timed

    timer = Timer(stmt="fn()", globals={"fn": fn})
    return statistics.median(timer.timeit(1).mean for _ in range(trials)) * 1e3


def _candidates(backend: str, device: torch.device, channels_last: bool | None, precision: str) -> list[str]:
    if precision == "int8":
        return ["onnxruntime"]
    if backend == "auto":
        cpu = ["onnxruntime", "eager"] if precision == "fp32" else ["eager"]  # ONNX Runtime runs fp32 and int8 only
        names = cpu if device.type == "cpu" else ["compile", "eager"]
    else:
        names = [backend]
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
    use_cl = name == "eager+channels_last" or (name == "compile" and bool(channels_last or device.type == "cuda"))
    module = model.to(memory_format=torch.channels_last) if use_cl else model
    if name == "compile":
        module = torch.compile(module, mode=compile_mode)
    return _TorchRunner(module, device, precision, use_cl)


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
) -> OptimizedModel:
    """A faster callable with ``model``'s outputs, checked against the model on ``example_input``.

    Args:
        model: the network (left unchanged; a copy is optimised).
        example_input: a typical input, on the device to run on; used to find conv-BN pairs, to check
            each back-end's outputs and to time them.
        backend: "auto" (measure the candidates for the device and keep the fastest), "onnxruntime"
            (CPU, fp32), "compile" (``torch.compile``) or "eager" (the folded model itself).
        precision: "fp32"; "bf16"/"fp16" through ``torch.autocast`` (torch back-ends; bf16 on the CPU needs
            native bf16 instructions); "int8": static post-training quantization (CPU, ONNX Runtime, QDQ,
            per-channel weights), calibrated on ``calibration``.
        calibration: int8 only: a folder of images, or an iterable of ``N×3×H×W`` batches of RGB in 0..1 (what
            the model takes; it normalises its input itself). A few dozen images like the data.
        reduce_range: int8 only: 7-bit weights (ONNX Runtime's ``reduce_range``); None: on a CPU without VNNI,
            where 8-bit weights may saturate AVX2's 16-bit sums.
        fold_bn: fold BatchNorms into the convolutions that feed them.
        channels_last: None: try channels-last for eager on CUDA only; True/False: always/never.
        compile_mode: ``mode`` for ``torch.compile`` (e.g. "max-autotune").
        num_threads: ONNX Runtime intra-op threads (default: ``torch.get_num_threads()``).
        tolerance: largest allowed max abs difference from the model on ``example_input``; default
            1e-3 for fp32, 5% of the output's largest magnitude for bf16/fp16, no limit for int8 (whose
            accuracy :func:`zoo.infer.quantize.quantization_report` measures on real images).
        warmup: untimed runs per candidate before timing ("auto" only).
        trials: timed runs per candidate ("auto" only).

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
    strict = backend != "auto" or precision == "int8"  # int8 has one candidate: its errors are the caller's
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
    runners: dict[str, Callable] = {}
    timings: dict[str, float] = {}
    diffs: dict[str, float] = {}
    errors: dict[str, str] = {}
    for name in names:
        try:
            runner = _build_runner(
                name,
                prepared,
                example_input,
                precision,
                channels_last,
                compile_mode,
                num_threads,
                calibration,
                reduce_range,
            )
            diffs[name] = max_abs_difference(reference, runner(example_input))
        except Exception as error:  # a back-end that cannot run this model is skipped under "auto"
            if strict:
                raise
            errors[name] = f"{type(error).__name__}: {error}"
            continue
        if diffs[name] > limit:
            message = f"backend {name!r} differs from the model by {diffs[name]:.3g} > tolerance {limit:.3g}"
            if strict:
                raise ValueError(message)
            errors[name] = message
            continue
        runners[name] = runner
        if len(names) > 1:
            timings[name] = _median_ms(lambda r=runner: r(example_input), warmup, trials)
    if not runners:
        raise RuntimeError(f"no back-end could run the model: {errors}")
    for name, message in errors.items():
        warnings.warn(f"optimize_for_inference skipped {name}: {message}", stacklevel=2)
    best = min(runners, key=lambda n: timings.get(n, 0.0))
    return OptimizedModel(runners[best], best, timings, diffs, folded, precision=precision, folded_model=prepared)
