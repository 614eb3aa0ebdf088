"""Weights for the zoo's encoders: timm/torchvision checkpoints (a file or "imagenet"), a renamer, a strict loader."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from zoo.hub import use_cache_if_offline


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` file or a ``torch.save`` file (plain state dict or ``{"state_dict": ...}``).

    Args:
        path: the weights file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        return load_file(str(path), device="cpu")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"weights file {str(path)!r} does not hold a state dict (found {type(obj).__name__})")
    return obj


_FEATURES_ONLY_TOP = re.compile(r"^([A-Za-z]+(?:_[A-Za-z]+)*)_(\d+)\.")


def from_features_only(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A timm ``features_only=True`` model's state dict in the full model's key names.

    timm's feature wrappers flatten the first level of module names (``stem.0`` becomes ``stem_0``,
    ``blocks.3`` becomes ``blocks_3``) or keep the model under ``body.`` (hook-based wrappers); other state dicts
    pass through unchanged.
    """
    if any(k.startswith("body.") for k in state_dict):
        state_dict = {k.removeprefix("body."): v for k, v in state_dict.items()}
    return {_FEATURES_ONLY_TOP.sub(r"\1.\2.", k, count=1): v for k, v in state_dict.items()}


def fetch_timm_state_dict(timm_name: str, weights: str | Path) -> dict[str, torch.Tensor]:
    """A timm state dict: read from a file, or timm's pretrained ``timm_name`` for ``weights="imagenet"``.

    Args:
        timm_name: the timm model whose weights fit (e.g. ``xception65``, ``legacy_xception``).
        weights: "imagenet" or a path to a ``.pth``/``.safetensors`` file.
    """
    if weights != "imagenet":
        return from_features_only(load_state_dict_file(weights))
    import timm

    use_cache_if_offline()  # an unreachable Hub fails at once (the cache only) instead of after retries
    try:
        return timm.create_model(timm_name, pretrained=True).state_dict()
    except Exception as err:  # noqa: BLE001 - offline, no Hub access, missing cache: all mean the same here
        raise ConnectionError(  # an OSError: the command line shows it as one line
            f"could not get timm's pretrained {timm_name!r} weights from the Hugging Face Hub ({type(err).__name__}: "
            f'{err}); offline, pass a timm state dict file instead: weights="/path/to/{timm_name}.pth"'
        ) from err


def fetch_torchvision_state_dict(model_name: str, weights: str | Path) -> dict[str, torch.Tensor]:
    """A torchvision state dict: read from a file, or torchvision's default ImageNet ``model_name`` weights.

    Args:
        model_name: the torchvision model whose weights fit (e.g. ``googlenet``).
        weights: "imagenet" or a path to a ``.pth``/``.safetensors`` file.
    """
    if weights != "imagenet":
        return load_state_dict_file(weights)
    import torchvision

    try:
        return torchvision.models.get_model_weights(model_name).DEFAULT.get_state_dict(progress=False)
    except Exception as err:  # noqa: BLE001 - offline, no access to download.pytorch.org: all mean the same here
        raise ConnectionError(
            f"could not get torchvision's pretrained {model_name!r} weights ({type(err).__name__}: {err}); offline, "
            f'pass a torchvision state dict file instead: weights="/path/to/{model_name}.pth"'
        ) from err


def load_converted(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state_dict`` into ``model`` strictly; a mismatch raises ``ValueError`` naming expected vs found.

    Args:
        model: the module to fill.
        state_dict: keys already in ``model``'s layout.
        source: where the weights came from (for the error message).

    The tensors are assigned, so ``model`` may be built on the meta device (no initialisation cost).
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k}: expected {tuple(expected[k].shape)}, found {tuple(v.shape)}"
        for k, v in state_dict.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if missing or unexpected or shapes:
        raise ValueError(
            f"weights {source} do not fit {type(model).__name__}: "
            f"{len(missing)} missing keys {_head(missing)}, {len(unexpected)} unexpected keys {_head(unexpected)}, "
            f"{len(shapes)} shape mismatches {_head(shapes)}"
        )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state_dict.items()}, assign=True)


def build_with_weights(build: Callable[[], nn.Module], state: dict[str, torch.Tensor] | None, source: str) -> nn.Module:
    """``build()``, then ``state`` loaded strictly (:func:`load_converted`); with weights the module is built on the
    meta device, since every tensor comes from them (no cost for a random initialisation that is overwritten).

    Args:
        build: makes the module.
        state: weights in the module's layout, or None for a random initialisation.
        source: where the weights came from (for the error message).
    """
    if state is None:
        return build()
    with torch.device("meta"):
        model = build()
    load_converted(model, state, source=source)
    return model


def _head(items: list[str], n: int = 6) -> str:
    return "[" + ", ".join(items[:n]) + (", ..." if len(items) > n else "") + "]"


Rule = tuple[str, "str | Callable[[re.Match], str]"]


def rename_keys(
    state_dict: dict[str, torch.Tensor], rules: Sequence[Rule], dropped: Sequence[str] = ()
) -> dict[str, torch.Tensor]:
    """Rename state-dict keys by regex rules (first match wins), dropping keys that match ``dropped``.

    A rule's replacement is a template for ``re.Match.expand`` or a function of the match; the part of the key
    after the match is kept. Keys that match no rule are kept unchanged (so that loading reports them).
    """
    out = {}
    for key, value in state_dict.items():
        if any(re.match(p, key) for p in dropped):
            continue
        new = key
        for pattern, repl in rules:
            m = re.match(pattern, key)
            if m:
                new = (m.expand(repl) if isinstance(repl, str) else repl(m)) + key[m.end() :]
                break
        out[new] = value
    return out
