"""Parameter and multiply-add counts.

MACs come from ``torch.utils.flop_counter.FlopCounterMode`` (PyTorch's own counter, which counts a
multiply-add as two FLOPs); we report MACs = FLOPs / 2 and label them as MACs.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(module: nn.Module) -> int:
    """Number of parameters (trainable or not) of ``module``."""
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def count_macs(module: nn.Module, *inputs: torch.Tensor) -> int:
    """Multiply-accumulate operations of one forward pass of ``module`` on ``inputs`` (eval mode)."""
    was_training = module.training
    module.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            module(*inputs)
    finally:
        module.train(was_training)
    return counter.get_total_flops() // 2
