"""Segmentation models: an encoder, a decoder and an optional auxiliary head, built by name.

A model owns its input normalisation (as Detectron2's and MMSegmentation's do): it takes RGB images in 0..1 and
subtracts its ``mean`` and divides by its ``std`` itself, so data pipelines, predictors and exported graphs never
need to know which encoder they feed.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from zoo.decoders import DECODERS
from zoo.decoders.auxiliary import build_aux_head
from zoo.encoders import DEEPLAB_TF_KWARGS, ENCODERS, build_encoder
from zoo.encoders.base import Encoder
from zoo.hub import HubMixin
from zoo.registry import WEIGHT_SOURCES, weight_source

Semantics = Literal["zoo", "deeplab-tf"]
SEMANTICS = ("zoo", "deeplab-tf")
DECODER_INPUTS = ("feature_info", "num_classes", "output_stride")  # what build_model passes itself
# Decoders that follow ``semantics="deeplab-tf"`` (they take ``align_corners``).
DEEPLAB_TF_DECODERS = ("deeplabv3", "deeplabv3plus", "dpc", "lraspp")


class SegmentationModel(nn.Module, HubMixin):
    """Encoder + decoder (+ auxiliary head): ``N×3×H×W`` RGB images in 0..1 to ``N×C×H×W`` logits, any H, W.

    The input is normalised with ``mean`` and ``std``. With ``semantics="zoo"`` it is then zero-padded at the
    bottom and right to a multiple of ``encoder.size_divisor`` (zero is the mean colour after normalisation, as
    DeepLab's reference pads with the mean pixel); the decoder's logits are upsampled bilinearly to the padded
    size and cropped back to H×W. With ``semantics="deeplab-tf"`` there is no padding (an ``n``-pixel side gives
    ``(n - 1) // s + 1`` cells at stride ``s``) and the logits are upsampled with ``align_corners=True``, as TF
    DeepLab does.

    Args:
        encoder: a zoo :class:`~zoo.encoders.base.Encoder`.
        decoder: a decoder built on ``encoder.feature_info``.
        num_classes: number of classes the decoder predicts.
        aux_head: optional head on one tap (training only), with ``aux_index`` the tap it reads.
        aux_index: index of the tap the auxiliary head reads.
        build_args: the keyword arguments of :func:`build_model` that rebuild this model.
        mean: RGB mean (0..1 scale) subtracted from the input (default: the encoder's).
        std: RGB standard deviation (0..1 scale) the input is divided by (default: the encoder's).
        semantics: "zoo" or "deeplab-tf" (see above).

    Attributes:
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
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        semantics: Semantics = "zoo",
    ) -> None:
        super().__init__()
        if semantics not in SEMANTICS:
            raise ValueError(f"semantics must be one of {SEMANTICS}, got {semantics!r}")
        self.semantics = semantics
        self.encoder = encoder
        self.decoder = decoder
        self.aux_head = aux_head
        self.aux_index = aux_index
        self.num_classes = num_classes
        self.build_args: dict[str, Any] = dict(build_args or {})
        self.mean = tuple(float(v) for v in (mean if mean is not None else encoder.mean))
        self.std = tuple(float(v) for v in (std if std is not None else encoder.std))
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need 3 values each, std positive; got mean={mean!r}, std={std!r}")
        self.register_buffer("pixel_mean", torch.tensor(self.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(self.std).view(1, 3, 1, 1), persistent=False)
        self.class_names: list[str] | None = None
        self.palette: list[list[int]] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """Logits at the input size; in training mode with an auxiliary head, ``dict(out=..., aux=...)``."""
        if x.ndim != 4:
            raise ValueError(f"expected an N×C×H×W batch, got a tensor of shape {tuple(x.shape)}")
        height, width = x.shape[-2:]
        x = (x - self.pixel_mean.to(x.dtype)) / self.pixel_std.to(x.dtype)
        tf = self.semantics == "deeplab-tf"
        padded = x if tf else pad_to_multiple(x, self.encoder.size_divisor)
        features = self.encoder(padded)
        logits = _upsample_crop(self.decoder(features), padded, height, width, tf)
        if self.aux_head is None or not self.training:
            return logits
        aux = _upsample_crop(self.aux_head(features[self.aux_index]), padded, height, width, tf)
        return {"out": logits, "aux": aux}

    def hub_config(self) -> dict[str, Any]:
        """What ``save_pretrained`` writes to config.json: build arguments, classes, palette, and ``card`` (dataset,
        metrics) when set."""
        return {
            "build_args": plain(self.build_args),
            "class_names": self.class_names,
            "palette": self.palette,
            **plain(getattr(self, "card", None) or {}),
        }

    @classmethod
    def from_hub_config(cls, config: dict[str, Any]) -> SegmentationModel:
        """The model (random weights) that a config.json written by ``save_pretrained`` describes."""
        model = build_model(**{**config["build_args"], "encoder_weights": None})
        model.class_names, model.palette = config.get("class_names"), config.get("palette")
        model.card = {k: config[k] for k in ("dataset", "metrics") if config.get(k)}
        return model


def pad_to_multiple(x: torch.Tensor, divisor: int) -> torch.Tensor:
    """Zero-pad ``x`` at the bottom and right so that its height and width are multiples of ``divisor``."""
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % divisor, -width % divisor
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h))


def _upsample_crop(
    logits: torch.Tensor, padded: torch.Tensor, height: int, width: int, align_corners: bool = False
) -> torch.Tensor:
    if logits.shape[-2:] != padded.shape[-2:]:
        logits = F.interpolate(logits, size=padded.shape[-2:], mode="bilinear", align_corners=align_corners)
    if padded.shape[-2:] == (height, width):
        return logits  # no crop: an exported graph would copy the whole output for nothing
    return logits[..., :height, :width]


def plain(value: Any) -> Any:
    """Tuples to lists, recursively, so build arguments are plain (YAML/JSON-friendly) data."""
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value


def build_model(
    encoder: str = "xception65",
    decoder: str = "deeplabv3plus",
    num_classes: int = 21,
    output_stride: int = 16,
    encoder_weights: str | Path | None = None,
    aux_head: bool = False,
    encoder_kwargs: dict[str, Any] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    semantics: Semantics = "zoo",
    weights: str | None = None,
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
        mean: the model's input normalisation mean (RGB, 0..1 scale); default: what the encoder's weights expect.
        std: the model's input normalisation std; default: the encoder's.
        semantics: "zoo" (default) or "deeplab-tf": TF DeepLab's exact forward pass, for its converted
            checkpoints (``zoo convert deeplab-tf``) and for training alike: every bilinear resize with
            ``align_corners=True`` (decoder upsampling, ASPP image pooling, final logits), no padding to a
            multiple of 32, the aligned Xceptions' decoder tap before its ReLU (``tap="raw"``) and MobileNet's
            strided convs padded as TF's ``SAME`` (``padding="tf-same"``): ``zoo.encoders.DEEPLAB_TF_KWARGS``.
            Batch-norm epsilons are TF's in both: 1e-3 in the backbones, 1e-5 in ASPP and decoder. For the
            decoders deeplabv3, deeplabv3plus and dpc.
        weights: None, or a published TF DeepLab model, ``"deeplab-tf:NAME"`` (``zoo.list_pretrained()``):
            downloaded once into torch.hub's cache and converted once. It sets the architecture (encoder,
            decoder, classes; ``semantics="deeplab-tf"``): left at their defaults, they follow it.
        **decoder_kwargs: decoder arguments (e.g. ``atrous_rates``, ``separable``, ``variant``).

    Raises:
        KeyError: unknown encoder or decoder name (the message lists the valid names).
        ValueError: bad ``num_classes``, ``semantics`` or decoder argument, or arguments ``weights`` contradicts.
        ConnectionError: ``weights`` could not be downloaded (the message names the URL and the offline route).
    """
    if weights is not None:
        given = {
            "encoder": (encoder, "xception65"),
            "decoder": (decoder, "deeplabv3plus"),
            "num_classes": (num_classes, 21),
        }
        return _published(weights, output_stride, aux_head, encoder_kwargs, given)
    decoder_cls = DECODERS.get(decoder)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    _check_decoder_kwargs(decoder, decoder_cls, decoder_kwargs)
    enc_kwargs, dec_kwargs = _semantics_kwargs(semantics, encoder, decoder, encoder_kwargs, decoder_kwargs)
    enc = build_encoder(encoder, output_stride=output_stride, weights=encoder_weights, **enc_kwargs)
    dec = decoder_cls(enc.feature_info, num_classes, enc.output_stride, **dec_kwargs)
    aux_index, aux = build_aux_head(enc.feature_info, num_classes) if aux_head else (None, None)
    model = SegmentationModel(enc, dec, num_classes, aux, aux_index, mean=mean, std=std, semantics=semantics)
    model.build_args = plain(
        {
            "encoder": encoder,
            "decoder": decoder,
            "num_classes": num_classes,
            "output_stride": output_stride,
            "aux_head": bool(aux_head),
            "encoder_kwargs": dict(encoder_kwargs or {}),
            "mean": model.mean,
            "std": model.std,
            **decoder_kwargs,
        }
    )
    if semantics != "zoo":  # the default is left out: build_args list what differs from it
        model.build_args["semantics"] = semantics
    return model


NET_EXCLUDED = ("num_classes", "weights")  # the data's, and a whole published model (init_from covers it)


def _net_section() -> type:
    """A frozen dataclass of :func:`build_model`'s arguments but ``num_classes`` and ``weights``, generated from its
    signature (its docstring stays the one reference); ``**decoder_kwargs`` becomes the field ``decoder_kwargs``."""
    hints = typing.get_type_hints(build_model, localns={"Semantics": Semantics})
    fields: list[Any] = [
        (name, hints[name], dataclasses.field(default=param.default))
        for name, param in inspect.signature(build_model).parameters.items()
        if name not in NET_EXCLUDED and param.kind is not param.VAR_KEYWORD
    ]
    fields.append(("decoder_kwargs", dict[str, Any] | None, dataclasses.field(default=None)))
    net = dataclasses.make_dataclass("Net", fields, frozen=True)
    net.__module__ = __name__  # jsonargparse and pickle find it as zoo.models.Net
    net.__doc__ = "The network of a training run: :func:`build_model`'s arguments but num_classes and weights."
    return net


Net = _net_section()


def build_net(net: Any, num_classes: int) -> SegmentationModel:
    """:func:`build_model` from a :data:`Net` (or a dict of its fields) and the data's ``num_classes``.

    Raises:
        ValueError: ``net`` names an argument that is not one of :data:`Net`'s fields (the closest is named).
    """
    args = dataclasses.asdict(net) if dataclasses.is_dataclass(net) else dict(net or {})
    valid = [f.name for f in dataclasses.fields(Net)]
    for name in args:
        if name not in valid:
            match = difflib.get_close_matches(name, valid, n=1)
            hint = f"; did you mean net.{match[0]}?" if match else f"; valid: {', '.join(valid)}"
            raise ValueError(f"net.{name} is not an argument of build_model{hint}")
    decoder_kwargs = args.pop("decoder_kwargs", None) or {}
    try:
        return build_model(**args, num_classes=num_classes, **decoder_kwargs)
    except TypeError as error:  # e.g. encoder_kwargs={"widht": 0.25}: one line naming the closest argument
        match = _UNEXPECTED.search(str(error))
        unexpected = match[1] if match else None
        if unexpected is None or unexpected not in (args.get("encoder_kwargs") or {}):
            raise
        valid = encoder_arguments(args.get("encoder", "xception65"))
        close = difflib.get_close_matches(unexpected, valid, n=1)
        hint = f"; did you mean {close[0]}?" if close else f"; valid: {', '.join(valid)}" if valid else ""
        raise ValueError(
            f"net.encoder_kwargs: {unexpected!r} is not an argument of encoder {args.get('encoder')!r}{hint}"
        ) from None


_UNEXPECTED = re.compile(r"got an unexpected keyword argument '(\w+)'")
_BUILD_ARGS = ("output_stride", "weights", "in_channels")  # what build_encoder passes itself


def encoder_arguments(encoder: str) -> list[str]:
    """The ``encoder_kwargs`` names a zoo encoder takes: its builder's and its class's keyword arguments."""
    if encoder not in ENCODERS:
        return []
    builder = ENCODERS.get(encoder)
    func = getattr(builder, "func", builder)
    names = [n for n, p in inspect.signature(builder).parameters.items() if p.kind is p.KEYWORD_ONLY]
    returned = inspect.signature(func).return_annotation
    cls = func.__globals__.get(returned) if isinstance(returned, str) else returned
    if inspect.isclass(cls):
        params = inspect.signature(cls.__init__).parameters.items()
        names += [n for n, p in params if n != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    return sorted(set(names) - set(_BUILD_ARGS))


def _published(
    weights: str, output_stride: int, aux_head: bool, encoder_kwargs: dict[str, Any] | None, given: dict[str, Any]
) -> SegmentationModel:
    """A published model (``weights="PREFIX:NAME"``, a registered weight source) with its weights."""
    source = weight_source(weights)
    if source is None:
        raise ValueError(f"weights must be None or PREFIX:NAME of {WEIGHT_SOURCES.names()} (zoo.list_pretrained())")
    args, state = source.model_state(weights)
    for arg, (value, default) in given.items():
        if value not in (default, args[arg]):
            published = f"{args['encoder']} + {args['decoder']}, {args['num_classes']} classes"
            raise ValueError(f"{weights} is {published}; {arg}={value!r}")
    class_names, palette = args.pop("class_names", None), args.pop("palette", None)
    encoder_kwargs = {**args.pop("encoder_kwargs", {}), **(encoder_kwargs or {})}  # a published depth multiplier
    model = build_model(**args, output_stride=output_stride, aux_head=aux_head, encoder_kwargs=encoder_kwargs)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.startswith("aux_head.")]:
        raise ValueError(f"{weights}: the converted weights do not fit ({missing[:3]}, {unexpected[:3]})")
    model.class_names, model.palette = class_names, palette
    return model


def _check_decoder_kwargs(name: str, decoder_cls: type, kwargs: dict[str, Any]) -> None:
    """Raise ``ValueError`` listing what decoder ``name`` takes when ``kwargs`` holds an argument it does not."""
    taken = [p for p in inspect.signature(decoder_cls).parameters if p not in DECODER_INPUTS]
    unknown = sorted(set(kwargs) - set(taken))
    if unknown:
        raise ValueError(f"decoder {name!r} takes no argument {', '.join(unknown)}; it takes: {', '.join(taken)}")


def _semantics_kwargs(
    semantics: str,
    encoder: str,
    decoder: str,
    encoder_kwargs: dict[str, Any] | None,
    decoder_kwargs: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The encoder and decoder arguments ``semantics`` adds to the given ones."""
    if semantics not in SEMANTICS:
        raise ValueError(f"semantics must be one of {SEMANTICS}, got {semantics!r}")
    if semantics == "zoo":
        return dict(encoder_kwargs or {}), dict(decoder_kwargs)
    if decoder not in DEEPLAB_TF_DECODERS:
        raise ValueError(f"semantics='deeplab-tf' needs one of the decoders {DEEPLAB_TF_DECODERS}, got {decoder!r}")
    if "align_corners" in decoder_kwargs:
        raise ValueError("semantics='deeplab-tf' sets align_corners itself; leave it out of the decoder arguments")
    return {**DEEPLAB_TF_KWARGS.get(encoder, {}), **(encoder_kwargs or {})}, {**decoder_kwargs, "align_corners": True}
