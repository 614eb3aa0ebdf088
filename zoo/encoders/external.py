"""smp encoders and timm models (``tu-<name>``) wrapped as zoo :class:`Encoder` s.

smp returns ``depth + 1`` positional features whose first entry is the input itself (transformer-style
timm models add an empty 0-channel map at stride 2). The wrapper drops those and describes what is left
by reduction, so decoders never depend on smp's positional contract.
"""

from __future__ import annotations

from pathlib import Path

import segmentation_models_pytorch as smp
import timm
import torch
from torch import nn

from zoo.encoders.base import OUTPUT_STRIDES, Encoder, FeatureInfo
from zoo.encoders.weights import load_converted, load_state_dict_file
from zoo.hub import use_cache_if_offline

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)
# smp encoders whose imagenet weights expect inputs in -1..1 (smp keeps these values on the Hub).
_INCEPTION_STYLE = ("inceptionv4", "inceptionresnetv2", "xception")


def is_external_name(name: str) -> bool:
    """Whether ``name`` is an smp encoder name or ``tu-<timm model>``."""
    if name.startswith("tu-"):
        return timm.is_model(name[3:].split(".")[0])
    return name in smp.encoders.encoders


def _is_tag(name: str, weights: str | Path) -> bool:
    """Whether ``weights`` names published weights (rather than a file) for encoder ``name``."""
    if isinstance(weights, Path):
        return False
    if name.startswith("tu-"):
        return weights == "imagenet"
    return weights in smp.encoders.encoders[name]["pretrained_settings"] or weights == "imagenet"


def _mean_std(name: str, weights: str | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if name.startswith("tu-"):
        cfg = timm.models.get_pretrained_cfg(name[3:])
        if cfg is not None and cfg.mean is not None:
            return tuple(cfg.mean), tuple(cfg.std)
        return IMAGENET_MEAN, IMAGENET_STD
    if isinstance(weights, str) and weights in smp.encoders.encoders[name]["pretrained_settings"]:
        try:  # the tag's config lives next to its weights on the Hub (cached once the weights are)
            params = smp.encoders.get_preprocessing_params(name, pretrained=weights)
            return tuple(params["mean"]), tuple(params["std"])
        except Exception:  # noqa: BLE001 - offline: fall back to the family's usual values
            pass
    if name in _INCEPTION_STYLE:
        return INCEPTION_MEAN, INCEPTION_STD
    return IMAGENET_MEAN, IMAGENET_STD


class ExternalEncoder(Encoder):
    """An smp encoder (or a timm model through smp's ``tu-`` adapter) described by reduction.

    Args:
        name: smp encoder name (e.g. ``resnet50``, ``mobilenet_v2``) or ``tu-<timm model>``.
        output_stride: reduction of the deepest feature, 8, 16 or 32 (through smp's dilation support).
        weights: None (random init), "imagenet" (or another smp weights tag), or a path to a state dict of
            the smp encoder (``.pth``/``.safetensors``).
        in_channels: channels of the input image.
        depth: number of smp stages (1..5).
        **kwargs: passed to smp's ``get_encoder`` (for ``tu-`` names: to ``timm.create_model``).
    """

    def __init__(
        self,
        name: str,
        *,
        output_stride: int = 32,
        weights: str | Path | None = None,
        in_channels: int = 3,
        depth: int = 5,
        **kwargs,
    ) -> None:
        super().__init__()
        if output_stride not in OUTPUT_STRIDES:
            raise ValueError(f"output_stride must be one of {{8, 16, 32}}, got {output_stride} (encoder {name!r})")
        is_file = weights is not None and not _is_tag(name, weights)
        tag = None if is_file else weights
        if name.startswith("tu-") and tag is not None:
            tag = True  # timm picks the pretrained tag from the name ("tu-resnet18.a1_in1k")
        if tag is not None:
            use_cache_if_offline()  # smp and timm download from the Hub: unreachable, fail at once from the cache
        try:
            self.body = smp.encoders.get_encoder(
                name, in_channels=in_channels, depth=depth, weights=tag, output_stride=output_stride, **kwargs
            )
        except (ValueError, TypeError) as err:
            if output_stride == 32:
                raise
            raise ValueError(f"encoder {name!r} cannot be dilated to output_stride={output_stride}: {err}") from err
        self.name = name
        if is_file:
            self._load(weights)
        self.output_stride = output_stride
        self.mean, self.std = _mean_std(name, weights if isinstance(weights, str) and not is_file else None)
        self.size_divisor = 32
        channels = list(self.body.out_channels)
        # Position i of smp's list is at reduction 2**i (capped by the output stride); drop the input
        # (reduction 1) and the empty placeholders.
        self._keep = [i for i, c in enumerate(channels) if i > 0 and c > 0]
        self.feature_info = [FeatureInfo(channels[i], min(2**i, output_stride)) for i in self._keep]

    def _load(self, path: str | Path) -> None:
        load_converted(self.body, load_state_dict_file(path), source=f"file {str(path)!r} (encoder {self.name!r})")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.body(x)
        return [features[i] for i in self._keep]


def build_external(name: str, **kwargs) -> nn.Module:
    """Build :class:`ExternalEncoder` ``name`` (see its Args)."""
    return ExternalEncoder(name, **kwargs)
