"""The candidates ``zoo benchmark`` times at one setting: the zoo's model, its fast path, smp's and timm's peers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils import _pytree as pytree

from zoo.benchmark.config import BenchmarkConfig, BenchmarkError, Mode, parse_model_spec
from zoo.encoders import build_encoder
from zoo.infer.optimize import PRECISIONS, optimize_for_inference
from zoo.models import build_model

# The zoo's aligned Xceptions and their counterparts: timm's model name (smp reaches it as "tu-<name>").
TIMM_NAMES = {
    "xception41": "xception41",
    "xception65": "xception65",
    "xception71": "xception71",
    "xception": "legacy_xception",
}
SMP_DECODERS = {"deeplabv3plus": "DeepLabV3Plus", "deeplabv3": "DeepLabV3", "unet": "Unet"}


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an out-of-memory error (CUDA or host)."""
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def describe_error(error: BaseException) -> str:
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
        if self.precision in ("fp32", "int8"):
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
    kwargs = dict(config.encoder_kwargs)
    try:
        if decoder is None:
            return build_encoder(encoder, output_stride=output_stride, **kwargs)
        return build_model(
            encoder, decoder, num_classes=config.num_classes, output_stride=output_stride, encoder_kwargs=kwargs
        )
    except KeyError as error:
        raise BenchmarkError("models", str(error.args[0] if error.args else error)) from None


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


def group_candidates(
    spec: str, size: tuple[int, int], os_: int, config: BenchmarkConfig, device: torch.device
) -> tuple[list[Candidate], list[tuple[str, str, str]]]:
    """The candidates of one setting, and (impl, part, error) of those that failed to build."""
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
            failed.append((impl, cpart, describe_error(error)))

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
    if config.fast or config.precision == "int8":
        if config.mode != "infer":
            raise BenchmarkError("mode", "the fast path (fast, precision 'int8') runs inference only: mode 'infer'")
        fast = _fast_candidate(zoo_module, part, size, config, device, versus=model_ref or enc_ref or "zoo")
        candidates.insert(1, fast)
    return candidates, failed


def _fast_candidate(
    module: nn.Module, part: str, size: tuple[int, int], config: BenchmarkConfig, device: torch.device, versus: str
) -> Candidate:
    example = torch.randn(config.batch_size, 3, *size, device=device)
    calibration = config.calibration
    if config.precision == "int8" and calibration is None:
        calibration = [torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    try:
        optimized = optimize_for_inference(
            module.eval(),
            example,
            backend=config.fast_backend,  # type: ignore[arg-type]
            precision=config.precision,  # type: ignore[arg-type]
            calibration=calibration if config.precision == "int8" else None,
            channels_last=True if config.channels_last else None,
            compile_mode=config.compile_mode,
            num_threads=config.threads,
        )
    except Exception as error:
        candidate = Candidate("zoo fast", part, module, size, None, versus=versus)  # type: ignore[arg-type]
        candidate.error = describe_error(error)
        return candidate
    label = optimized.backend if config.precision == "fp32" else f"{optimized.backend}, {config.precision}"
    return Candidate(f"zoo fast ({label})", part, module, size, optimized, versus=versus)
