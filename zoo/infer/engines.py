"""Which engine runs a model fastest on this CPU: the candidates, the choice, and the choice remembered.

``optimize_for_inference(..., backend="auto")`` times the candidates the CPU and the installed packages support on
the actual input, keeps the fastest whose outputs pass the check against the model, and records the choice in a
small JSON file (:class:`EngineCache`) keyed by the CPU (model name and flags), the model's weights (a hash of its
state), the input shape, the precision, the candidates and the threads. The next build with the same key builds
only the remembered engine and skips the timing.

The file lives in ``$ZOO_CACHE_DIR``, else ``$XDG_CACHE_HOME/zoo``, else ``~/.cache/zoo``; it is written atomically,
and a file that cannot be read (corrupt, another format) is ignored with a warning and replaced on the next write.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.errors import ZooWarning
from zoo.fileio import atomic_write
from zoo.infer.precision import cpu_flags, has_openvino, has_torchao

CACHE_FORMAT = 1
CACHE_FILE = "engines.json"
ENGINES_ENV = "ZOO_ENGINES"
TORCHAO_FLAGS = frozenset({"amx_int8"})  # where torchao int8 is an auto candidate


def candidates(
    precision: str,
    device_type: str = "cpu",
    openvino: bool | None = None,
    torchao: bool | None = None,
    flags: frozenset[str] | None = None,
) -> list[str]:
    """The engines ``backend="auto"`` times for ``precision`` on ``device_type``, and only those named in
    ``$ZOO_ENGINES`` where it is set (comma-separated, e.g. ``onnxruntime,eager``).

    On the CPU: OpenVINO where installed; for bf16 also ``torch.compile`` (autocast, channels-last, freezing; bf16
    itself is refused on a CPU without native bf16 instructions); for int8 torchao's PT2E graph where torchao is
    installed and the CPU has AMX int8 (oneDNN's AMX int8 kernels are what it compiles to; on AVX-512 VNNI without
    AMX it measured 7% behind OpenVINO's int8 and took minutes to compile, BENCHMARKS.md), and always by
    ``backend="torchao"``.

    Args:
        precision: "fp32", "bf16", "fp16" or "int8".
        device_type: "cpu" or "cuda".
        openvino: whether OpenVINO is installed (default: look).
        torchao: whether torchao is installed (default: look).
        flags: the CPU's instruction-set flags (default: :func:`zoo.infer.precision.cpu_flags`).
    """
    openvino = has_openvino(nncf=precision == "int8") if openvino is None else openvino
    torchao = has_torchao() if torchao is None else torchao
    flags = cpu_flags() if flags is None else flags
    ov = ["openvino"] if openvino else []
    tao = ["torchao"] if torchao and TORCHAO_FLAGS & flags else []
    names = {
        "fp32": ["onnxruntime", *ov, "eager"],
        "int8": ["onnxruntime", *ov, *tao],
        "bf16": ["eager", "compile", *ov],
    }
    names = names.get(precision, ["eager"]) if device_type == "cpu" else ["compile", "eager"]
    allowed = os.environ.get(ENGINES_ENV, "").replace(" ", "")
    if allowed:
        names = [n for n in names if n in allowed.split(",")] or names[-1:]
    return names


def choose(timings_ms: Mapping[str, float], passed: set[str] | frozenset[str]) -> str:
    """The fastest engine among those whose outputs ``passed`` the check.

    Raises:
        RuntimeError: none passed.
    """
    ok = [name for name in timings_ms if name in passed]
    if not ok:
        raise RuntimeError(f"no engine passed the accuracy check among {sorted(timings_ms)}")
    return min(ok, key=lambda name: timings_ms[name])


# ----------------------------------------------------------------------------------------------------------------------
# The key


def cpu_identity() -> str:
    """The CPU's model name and its sorted instruction-set flags (what decides which engine is fastest)."""
    name = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Processor", "CPU part"):
                    name = value.strip()
                    break
    except OSError:
        pass
    return f"{name or platform.processor() or platform.machine()} | {' '.join(sorted(cpu_flags()))}"


def state_hash(model: nn.Module) -> str:
    """A SHA-256 of the model's state (names, shapes, dtypes and values): the weights, wherever they came from."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def choice_key(
    model: nn.Module | str,
    input_shape: tuple[int, ...],
    precision: str,
    names: list[str],
    num_threads: int,
    cpu: str | None = None,
) -> str:
    """The cache key of one choice: a hash of the CPU, the model (or its state hash), the input shape, the precision,
    the candidates and the threads."""
    parts = {
        "cpu": cpu if cpu is not None else cpu_identity(),
        "model": model if isinstance(model, str) else state_hash(model),
        "shape": list(input_shape),
        "precision": precision,
        "candidates": list(names),
        "threads": int(num_threads),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


# ----------------------------------------------------------------------------------------------------------------------
# The file


def cache_dir() -> Path:
    """``$ZOO_CACHE_DIR``, else ``$XDG_CACHE_HOME/zoo``, else ``~/.cache/zoo``."""
    if os.environ.get("ZOO_CACHE_DIR"):
        return Path(os.environ["ZOO_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "zoo"


class EngineCache:
    """The remembered choices: ``{"format": 1, "choices": {key: {"backend": ..., "timings_ms": {...}}}}``.

    Args:
        path: the JSON file (default: ``cache_dir() / "engines.json"``).
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else cache_dir() / CACHE_FILE

    def _load(self) -> dict[str, Any]:
        if not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text())
            if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
                raise ValueError(f"not a format-{CACHE_FORMAT} engine cache")
            choices = data["choices"]
            if not isinstance(choices, dict):
                raise ValueError("'choices' is not an object")
            return choices
        except (OSError, ValueError, KeyError) as error:  # json.JSONDecodeError is a ValueError
            warnings.warn(f"ignored the engine cache {self.path} ({error}); it is rewritten", ZooWarning, stacklevel=3)
            return {}

    def get(self, key: str, names: list[str]) -> dict[str, Any] | None:
        """The record of ``key`` if its engine is one of ``names`` and it is well formed, else None."""
        record = self._load().get(key)
        if not isinstance(record, dict) or record.get("backend") not in names:
            return None
        timings = record.get("timings_ms")
        if not isinstance(timings, dict) or not all(isinstance(v, (int, float)) for v in timings.values()):
            return None
        return record

    def put(self, key: str, backend: str, timings_ms: Mapping[str, float]) -> None:
        """Remember ``backend`` (and the timings it won with) for ``key``; an unwritable cache only warns."""
        choices = self._load()
        choices[key] = {"backend": backend, "timings_ms": {k: float(v) for k, v in timings_ms.items()}}
        text = json.dumps({"format": CACHE_FORMAT, "choices": choices}, indent=1, sort_keys=True)
        try:
            atomic_write(self.path, lambda f: f.write(text.encode()))
        except OSError as error:
            warnings.warn(f"could not write the engine cache {self.path}: {error}", ZooWarning, stacklevel=3)


__all__ = ["EngineCache", "cache_dir", "candidates", "choice_key", "choose", "cpu_identity", "state_hash"]
