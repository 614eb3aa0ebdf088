"""Which precisions run where: the one check that ``Predictor``, ``optimize_for_inference``, the int8 export and the
benchmark share, and the CPU's instruction sets.

The rules: "fp32" runs everywhere. Any other precision runs on the fast path (:func:`zoo.optimize_for_inference`),
so asking for it implies the fast path. "bf16" and "fp16" run under ``torch.autocast``; on the CPU "bf16" needs
native bf16 instructions. "int8" is static post-training quantization: CPU only, on the "auto", "onnxruntime" or
"openvino" back-end, calibrated on images like the data (a folder of them, or batches), or on "torchao" (torchao's
PT2E flow with the x86 Inductor quantizer, the optional ``torchao`` extra). "openvino" (the optional ``openvino``
extra) runs fp32, bf16 and int8 on the CPU. This module imports no torch, so the
command line can offer its names instantly.
"""

from __future__ import annotations

import importlib.util
import platform
from pathlib import Path
from typing import Any

from zoo.errors import ArgumentError

PRECISION_NAMES = ("fp32", "bf16", "fp16", "int8")
BACKENDS = ("auto", "onnxruntime", "openvino", "torchao", "compile", "eager")
INT8_BACKENDS = ("auto", "onnxruntime", "openvino", "torchao")
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
INT8_FLAGS = VNNI_FLAGS | {"avx2", "asimddp"}  # x86: AVX2 at least; Arm: the dot-product extension
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})  # x86 AVX-512 BF16 / AMX, Arm BF16


def cpu_flags() -> frozenset[str]:
    """The instruction-set flags of this CPU (``flags`` on x86, ``Features`` on Arm, from /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def has_vnni(flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU multiplies 8-bit integers without saturating (VNNI or AMX)."""
    return bool((cpu_flags() if flags is None else flags) & VNNI_FLAGS)


def check_cpu_precision(precision: str, flags: frozenset[str] | None = None) -> None:
    """Raise an :class:`~zoo.errors.ArgumentError` when this CPU has no native instructions for ``precision``.

    Args:
        precision: "fp32", "fp16", "int8" or "bf16" (only "int8" and "bf16" need instructions).
        flags: the CPU's flags (default: :func:`cpu_flags`).
    """
    flags = cpu_flags() if flags is None else flags
    needed = {"int8": INT8_FLAGS, "bf16": BF16_FLAGS}.get(precision)
    if needed is None or flags & needed:
        return
    cpu = platform.processor() or platform.machine()
    raise ArgumentError(
        "precision",
        f"{precision!r} on the CPU needs one of the instruction sets {sorted(needed)}; this CPU ({cpu}) has none "
        "of them",
    )


def has_openvino(nncf: bool = False) -> bool:
    """Whether ``openvino`` (and ``nncf`` when asked) can be imported, without importing them."""
    names = ("openvino", "nncf") if nncf else ("openvino",)
    return all(importlib.util.find_spec(name) is not None for name in names)


def require_openvino(nncf: bool = False, flags: frozenset[str] | None = None) -> None:
    """Raise an :class:`~zoo.errors.ArgumentError` naming ``backend`` where OpenVINO cannot run here: the package
    (or ``nncf``, for int8) is not installed, or an x86 CPU lacks SSE4.2, the least OpenVINO's CPU plug-in needs."""
    if not has_openvino(nncf):
        what = "openvino and nncf" if nncf else "openvino"
        raise ArgumentError("backend", f"'openvino' needs {what}: pip install 'zoo[openvino]'")
    flags = cpu_flags() if flags is None else flags
    if platform.machine() in ("x86_64", "AMD64") and flags and "sse4_2" not in flags:
        raise ArgumentError("backend", "'openvino' needs a CPU with SSE4.2; this CPU has none: use 'onnxruntime'")


def has_torchao() -> bool:
    """Whether ``torchao`` can be imported, without importing it."""
    return importlib.util.find_spec("torchao") is not None


def require_torchao() -> None:
    """Raise an :class:`~zoo.errors.ArgumentError` naming ``backend`` where torchao is not installed."""
    if not has_torchao():
        raise ArgumentError("backend", "'torchao' needs torchao: pip install 'zoo[torchao]'")


def device_type(device: Any) -> str:
    """ "cpu" or "cuda" for a device name or ``torch.device`` ("gpu" is refused with the valid names)."""
    name = str(device)
    kind = name.split(":")[0]
    if kind not in ("cpu", "cuda"):
        raise ArgumentError("device", f"unknown device {name!r}; valid: 'cpu', 'cuda' or 'cuda:N'")
    return kind


def check_precision(
    precision: str,
    *,
    device: Any = "cpu",
    backend: str = "auto",
    calibration: Any = None,
    needs_calibration: bool = True,
    choices: tuple[str, ...] = PRECISION_NAMES,
) -> None:
    """Raise before any work for a precision that cannot run here.

    Args:
        precision: one of ``choices``.
        device: where it runs ("cpu", "cuda", a ``torch.device``).
        backend: the fast path's back-end ("auto", "onnxruntime", "openvino", "torchao", "compile", "eager").
        calibration: int8: a folder of images (checked to exist; its images are read when calibrating) or an
            iterable of batches.
        needs_calibration: int8 without ``calibration`` is an error (the benchmark calibrates on random images).
        choices: the precisions the caller offers (``zoo export`` writes fp32 and int8 only).

    Raises:
        ArgumentError: naming ``precision``, ``backend``, ``device`` or ``calibration``.
    """
    if precision not in choices:
        raise ArgumentError("precision", f"must be one of {list(choices)}, got {precision!r}")
    if backend not in BACKENDS:
        raise ArgumentError("backend", f"must be one of {list(BACKENDS)}, got {backend!r}")
    kind = device_type(device)
    if backend == "onnxruntime" and (kind != "cpu" or precision not in ("fp32", "int8")):
        raise ArgumentError("backend", f"'onnxruntime' runs fp32 or int8 on the CPU only, not {precision} on {kind}")
    if backend == "openvino":
        if kind != "cpu" or precision == "fp16":
            raise ArgumentError(
                "backend", f"'openvino' runs fp32, bf16 or int8 on the CPU only, not {precision} on {kind}"
            )
        require_openvino(nncf=precision == "int8")
    if backend == "torchao":
        if kind != "cpu" or precision != "int8":
            raise ArgumentError("backend", f"'torchao' runs int8 on the CPU only, not {precision} on {kind}")
        require_torchao()
    if precision == "int8":
        if kind != "cpu":
            raise ArgumentError("device", "precision 'int8' runs on the CPU only (ONNX Runtime, OpenVINO or torchao)")
        if backend not in INT8_BACKENDS:
            raise ArgumentError("backend", f"precision 'int8' runs on one of {list(INT8_BACKENDS)}, not {backend!r}")
        if calibration is None and needs_calibration:
            raise ArgumentError(
                "calibration", "precision 'int8' needs calibration images: a folder of images like the data"
            )
        if isinstance(calibration, (str, Path)) and not Path(calibration).is_dir():
            raise ArgumentError("calibration", f"folder {calibration} does not exist")
    if kind == "cpu":
        check_cpu_precision(precision)


__all__ = [
    "BACKENDS",
    "INT8_BACKENDS",
    "PRECISION_NAMES",
    "check_cpu_precision",
    "check_precision",
    "cpu_flags",
    "device_type",
    "has_openvino",
    "has_vnni",
    "require_openvino",
]
