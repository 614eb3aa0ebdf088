"""int8 through torchao's PT2E flow with the x86 Inductor quantizer: a back-end of the fast path (``"torchao"``).

The folded model is exported (``torch.export``) at the input's shape, annotated by torchao's
``X86InductorQuantizer`` (its default static config: int8 activations per tensor, int8 weights per channel),
calibrated on the ``calibration`` images, converted, and compiled by Inductor with ``freezing`` (the weights become
constants, so oneDNN's int8 convolutions are fused in; AMX int8 where the CPU has it). torchao is used, not
torch's own eager quantization namespace, which torch is deleting. The graph is fixed to one input shape: each
new shape is exported, calibrated (the images resized to it) and compiled again, as ONNX Runtime's fixed-shape
sessions are. ``torchao`` is optional (the ``torchao`` extra) and imported here only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from zoo.errors import ArgumentError
from zoo.infer.precision import require_torchao


def quantize_pt2e(model: nn.Module, example_input: torch.Tensor, calibration: Sequence[torch.Tensor]) -> nn.Module:
    """``model`` exported at ``example_input``'s shape and quantized by torchao's PT2E flow (X86InductorQuantizer),
    calibrated on ``calibration`` (``N×3×H×W`` batches in 0..1, resized to the example's size)."""
    require_torchao()
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
    exported = torch.export.export(model.eval(), (example_input,)).module()
    prepared = prepare_pt2e(exported, quantizer)
    size = tuple(example_input.shape[-2:])
    with torch.no_grad():
        for batch in calibration:
            if tuple(batch.shape[-2:]) != size:
                batch = F.interpolate(batch, size=size, mode="bilinear", align_corners=False)
            prepared(batch.to(example_input.dtype))
    return convert_pt2e(prepared)


class TorchaoRunner:
    """Runs a (folded) module quantized by torchao and compiled by Inductor with freezing, one graph per input shape.

    Args:
        model: the folded module, on the CPU, in eval mode.
        example_input: an input whose shape is built now.
        calibration: the calibration batches (``N×3×H×W`` in 0..1).

    Attributes:
        calibration_images: how many images the activation ranges were calibrated on.
        ranges: None (the ranges live in the graph; the quantization report skips its range check).
    """

    ranges = None

    def __init__(self, model: nn.Module, example_input: torch.Tensor, calibration: Sequence[torch.Tensor]) -> None:
        require_torchao()
        if not calibration:
            raise ArgumentError("calibration", "precision 'int8' needs calibration images")
        self.model = model.cpu().eval()
        self.calibration = list(calibration)
        self.calibration_images = sum(int(b.shape[0]) for b in self.calibration)
        self.graphs: dict[tuple[int, ...], Any] = {}
        self(example_input)

    def _graph(self, x: torch.Tensor) -> Any:
        key = tuple(x.shape)
        if key not in self.graphs:
            from torch._inductor import config as inductor_config  # Inductor's own switch for freezing

            quantized = quantize_pt2e(self.model, x, self.calibration)
            compiled = torch.compile(quantized)
            with inductor_config.patch(freezing=True), torch.no_grad():
                compiled(x)  # compiles now, with the weights frozen into the graph
            self.graphs[key] = compiled
        return self.graphs[key]

    def __call__(self, x: torch.Tensor) -> Any:
        x = x.detach().cpu().float().contiguous()
        with torch.no_grad():
            return self._graph(x)(x)


__all__ = ["TorchaoRunner", "quantize_pt2e"]
