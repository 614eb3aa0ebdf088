"""The device a command runs on: a name checked against what this machine has, before any work."""

from __future__ import annotations

import torch

from zoo.errors import ArgumentError
from zoo.infer.precision import device_type


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device``, when this machine has it.

    Args:
        device: "cpu", "cuda", "cuda:N" or a ``torch.device``.

    Raises:
        ArgumentError: naming ``device``: an unknown name ("gpu"), or CUDA on a machine without it.
    """
    if device_type(device) == "cuda":
        if not torch.cuda.is_available():
            raise ArgumentError("device", f"{str(device)!r}: CUDA is not available on this machine; valid here: 'cpu'")
        index = torch.device(device).index
        if index is not None and index >= torch.cuda.device_count():
            raise ArgumentError("device", f"{str(device)!r}: this machine has {torch.cuda.device_count()} CUDA devices")
    return torch.device(device)


__all__ = ["resolve_device"]
