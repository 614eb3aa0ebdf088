"""Segmentation models: an encoder, a decoder and an optional auxiliary head; built, saved and loaded by name."""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.decoders import DECODERS
from zoo.decoders.aux import build_aux_head
from zoo.encoders import build_encoder
from zoo.encoders.base import Encoder

LIGHTNING_PREFIX = "model."


class SegmentationModel(nn.Module):
    """Encoder + decoder (+ auxiliary head): ``N×3×H×W`` normalised images to ``N×C×H×W`` logits, any H, W.

    The input is zero-padded at the bottom and right to a multiple of ``encoder.size_divisor`` (zero is the
    mean colour after normalisation, as DeepLab's reference pads with the mean pixel); the decoder's logits
    are upsampled bilinearly to the padded size and cropped back to H×W.

    Args:
        encoder: a zoo :class:`~zoo.encoders.base.Encoder`.
        decoder: a decoder built on ``encoder.feature_info``.
        num_classes: number of classes the decoder predicts.
        aux_head: optional head on one tap (training only), with ``aux_index`` the tap it reads.
        aux_index: index of the tap the auxiliary head reads.
        build_args: the keyword arguments of :func:`build_model` that rebuild this model.

    Attributes:
        mean, std: the input normalisation the encoder's weights expect (RGB in 0..1).
        class_names, palette: optional class description, kept by :func:`save_model` / :func:`load_model`.
    """

    def __init__(
        self,
        encoder: Encoder,
        decoder: nn.Module,
        num_classes: int,
        aux_head: nn.Module | None = None,
        aux_index: int | None = None,
        build_args: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.aux_head = aux_head
        self.aux_index = aux_index
        self.num_classes = num_classes
        self.build_args: dict[str, Any] = dict(build_args or {})
        self.mean = tuple(float(v) for v in encoder.mean)
        self.std = tuple(float(v) for v in encoder.std)
        self.class_names: list[str] | None = None
        self.palette: list[list[int]] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """Logits at the input size; in training mode with an auxiliary head, ``dict(out=..., aux=...)``."""
        if x.ndim != 4:
            raise ValueError(f"expected an N×C×H×W batch, got a tensor of shape {tuple(x.shape)}")
        height, width = x.shape[-2:]
        padded = pad_to_multiple(x, self.encoder.size_divisor)
        features = self.encoder(padded)
        logits = _upsample_crop(self.decoder(features), padded, height, width)
        if self.aux_head is None or not self.training:
            return logits
        aux = _upsample_crop(self.aux_head(features[self.aux_index]), padded, height, width)
        return {"out": logits, "aux": aux}


def pad_to_multiple(x: torch.Tensor, divisor: int) -> torch.Tensor:
    """Zero-pad ``x`` at the bottom and right so that its height and width are multiples of ``divisor``."""
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % divisor, -width % divisor
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h))


def _upsample_crop(logits: torch.Tensor, padded: torch.Tensor, height: int, width: int) -> torch.Tensor:
    if logits.shape[-2:] != padded.shape[-2:]:
        logits = F.interpolate(logits, size=padded.shape[-2:], mode="bilinear", align_corners=False)
    if padded.shape[-2:] == (height, width):
        return logits  # no crop: an exported graph would copy the whole output for nothing
    return logits[..., :height, :width]


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively, so build arguments are plain (YAML/JSON-friendly) data."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def build_model(
    encoder: str = "xception65",
    decoder: str = "deeplabv3plus",
    num_classes: int = 21,
    output_stride: int = 16,
    encoder_weights: str | Path | None = None,
    aux_head: bool = False,
    encoder_kwargs: dict[str, Any] | None = None,
    **decoder_kwargs: Any,
) -> SegmentationModel:
    """Build a segmentation model from an encoder name and a decoder name.

    Args:
        encoder: encoder name (``zoo.list_encoders()``, an smp encoder name, or ``tu-<timm model>``).
        decoder: decoder name (``zoo.list_decoders()``).
        num_classes: number of classes.
        output_stride: the encoder's output stride, 8, 16 or 32.
        encoder_weights: None (random init), "imagenet", or a weights file for the encoder.
        aux_head: add an auxiliary FCN head on the tap before the deepest (training output ``dict(out, aux)``).
        encoder_kwargs: extra encoder arguments (e.g. ``{"width": 0.25}`` for a tiny Xception).
        **decoder_kwargs: decoder arguments (e.g. ``atrous_rates``, ``separable``, ``variant``).

    Raises:
        KeyError: unknown encoder or decoder name (the message lists the valid names).
        ValueError: bad ``num_classes`` or decoder argument.
    """
    decoder_cls = DECODERS.get(decoder)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    enc = build_encoder(encoder, output_stride=output_stride, weights=encoder_weights, **(encoder_kwargs or {}))
    dec = decoder_cls(enc.feature_info, num_classes, enc.output_stride, **decoder_kwargs)
    aux_index, aux = build_aux_head(enc.feature_info, num_classes) if aux_head else (None, None)
    build_args = _plain(
        {
            "encoder": encoder,
            "decoder": decoder,
            "num_classes": num_classes,
            "output_stride": output_stride,
            "aux_head": bool(aux_head),
            "encoder_kwargs": dict(encoder_kwargs or {}),
            **decoder_kwargs,
        }
    )
    return SegmentationModel(enc, dec, num_classes, aux, aux_index, build_args)


def model_meta(
    model: SegmentationModel,
    class_names: Sequence[str] | None = None,
    palette: Sequence[Sequence[int]] | None = None,
) -> dict[str, Any]:
    """The description stored beside a model's weights (``checkpoint["zoo"]``).

    Args:
        model: the model.
        class_names: class names (default: ``model.class_names``).
        palette: one RGB colour per class (default: ``model.palette``).
    """
    class_names = class_names if class_names is not None else model.class_names
    palette = palette if palette is not None else model.palette
    for what, value in (("class_names", class_names), ("palette", palette)):
        if value is not None and len(value) != model.num_classes:
            raise ValueError(f"{what} has {len(value)} entries, expected num_classes={model.num_classes}")
    return {
        "build_args": _plain(model.build_args),
        "class_names": [str(c) for c in class_names] if class_names is not None else None,
        "palette": [[int(v) for v in c] for c in palette] if palette is not None else None,
        "mean": [float(v) for v in model.mean],
        "std": [float(v) for v in model.std],
    }


def save_model(
    model: SegmentationModel,
    path: str | Path,
    *,
    class_names: Sequence[str] | None = None,
    palette: Sequence[Sequence[int]] | None = None,
) -> Path:
    """Save ``{"zoo": meta, "state_dict": model.state_dict()}`` to ``path`` (see :func:`model_meta`).

    Args:
        model: the model to save.
        path: output file (parent folders are created).
        class_names: class names (default: ``model.class_names``).
        palette: one RGB colour per class (default: ``model.palette``).
    """
    if not isinstance(model, SegmentationModel):
        raise TypeError(f"save_model needs a SegmentationModel (from build_model), got {type(model).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"zoo": model_meta(model, class_names, palette), "state_dict": model.state_dict()}, path)
    return path


def _read_checkpoint(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(f"{path} holds objects other than tensors and plain data; not loaded: {error}") from None


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> SegmentationModel:
    """Rebuild a model from a file written by :func:`save_model` or a training (Lightning) checkpoint.

    The model is built from the stored ``build_args`` with ``encoder_weights=None``, then the stored weights
    are loaded (in a Lightning checkpoint, the ``state_dict`` keys starting with ``model.``). The returned
    model is in eval mode, with ``class_names`` and ``palette`` set from the file. Files are read with
    ``torch.load(weights_only=True)``: tensors and plain data only.

    Args:
        path: the file.
        map_location: where to put the weights (``torch.load``'s ``map_location``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a zoo model or checkpoint, holds other objects, or its weights do not fit its
            build arguments.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such model file: {path}")
    checkpoint = _read_checkpoint(path, map_location)
    if not isinstance(checkpoint, dict) or "zoo" not in checkpoint or "state_dict" not in checkpoint:
        raise ValueError(f"{path} is not a zoo model file: expected the keys 'zoo' and 'state_dict'")
    meta = checkpoint["zoo"]
    state = checkpoint["state_dict"]
    if any(k.startswith(LIGHTNING_PREFIX) for k in state):
        state = {k[len(LIGHTNING_PREFIX) :]: v for k, v in state.items() if k.startswith(LIGHTNING_PREFIX)}
    build_args = {**meta["build_args"], "encoder_weights": None}
    model = build_model(**build_args)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"{path}: the weights do not fit the model its build_args describe: {error}") from None
    model.class_names = list(meta["class_names"]) if meta.get("class_names") is not None else None
    model.palette = [list(c) for c in meta["palette"]] if meta.get("palette") is not None else None
    return model.to(map_location).eval()
