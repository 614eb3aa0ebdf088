"""What every zoo encoder provides: feature maps described by reduction, not by list position."""

from dataclasses import dataclass

import torch
from torch import nn

OUTPUT_STRIDES = (8, 16, 32)


def check_build_args(output_stride: int, width: float = 1.0, stem_padding: object = "same") -> None:
    """Raise ``ValueError`` naming the argument for an output stride, width or stem padding no encoder takes."""
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {{8, 16, 32}}, got {output_stride}")
    if not width > 0:
        raise ValueError(f"width must be positive, got {width}")
    if stem_padding not in ("same", "valid"):
        raise ValueError(f"stem_padding must be 'same' or 'valid', got {stem_padding!r}")


@dataclass(frozen=True)
class FeatureInfo:
    """One feature tap: its channel count and its reduction (input size / feature size)."""

    channels: int
    reduction: int


class Encoder(nn.Module):
    """Base class of zoo encoders.

    ``forward`` returns one tensor per entry of ``feature_info``, ordered from the shallowest to the
    deepest tap. Reductions are non-decreasing; with a dilated encoder (output stride 8 or 16) the
    deepest taps repeat the same reduction.

    Attributes:
        feature_info: channels and reduction of each tap.
        output_stride: the reduction of the deepest tap.
        mean, std: the normalisation the encoder's weights expect (RGB in 0..1).
        size_divisor: inputs whose height and width are multiples of this give exact reductions.
    """

    feature_info: list[FeatureInfo]
    __jit_ignored_attributes__ = ["feature_info"]  # descriptive only: TorchScript need not type it
    output_stride: int = 32
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    size_divisor: int = 32

    def reductions(self) -> list[int]:
        return [f.reduction for f in self.feature_info]

    def index_of(self, reduction: int | str) -> int:
        """Index of the tap at ``reduction`` ("deepest" for the last); with repeats, the last such tap."""
        if reduction == "deepest":
            return len(self.feature_info) - 1
        found = [i for i, f in enumerate(self.feature_info) if f.reduction == reduction]
        if not found:
            raise ValueError(f"{type(self).__name__} has no feature at reduction {reduction}; has {self.reductions()}")
        return found[-1]

    def truncate(self, num_features: int) -> None:
        """Keep only what the first ``num_features`` taps need (smp's ``encoder_depth`` < 5): later modules are
        removed, so they neither cost compute nor sit in the model without gradients."""
        raise NotImplementedError(f"{type(self).__name__} cannot be truncated")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError
