"""TF DeepLab's published checkpoints by name: downloaded once into torch.hub's cache, converted once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from zoo.convert.deeplab_tf import convert_deeplab_tf, dataset_classes
from zoo.convert.tables import PUBLISHED, PublishedModel
from zoo.fileio import atomic_write

PREFIX = "deeplab-tf:"
SIZE_TOLERANCE = 0.05


def list_pretrained() -> list[str]:
    """Names of TF DeepLab's published models (``weights="deeplab-tf:NAME"``, ImageNet ones as ``encoder_weights``)."""
    return [m.name for m in PUBLISHED]


def published(weights: str) -> PublishedModel:
    """The :class:`PublishedModel` that ``"deeplab-tf:NAME"`` names; ``KeyError`` listing the names otherwise."""
    name = weights[len(PREFIX) :] if weights.startswith(PREFIX) else weights
    for model in PUBLISHED:
        if model.name == name:
            return model
    raise KeyError(f"unknown TF DeepLab model {name!r}; known: {', '.join(list_pretrained())}")


def cache_dir() -> Path:
    """Where the tarballs and converted models are kept: ``<torch.hub.get_dir()>/deeplab_tf``."""
    return Path(torch.hub.get_dir()) / "deeplab_tf"


def download(model: PublishedModel) -> Path:
    """The model's tarball in the cache, downloaded on first use and checked against the published size (where
    model_zoo.md gives one).

    Raises:
        ConnectionError: the download failed (offline: the message names the URL and the ``zoo convert`` route).
        ValueError: the file's size is not the published one.
    """
    path = cache_dir() / model.file
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(model.url, str(path), progress=True)
        except Exception as error:  # noqa: BLE001 - offline, DNS, HTTP errors: all mean the same here
            raise ConnectionError(  # an OSError: the command line shows it as one line
                f"could not download {model.url} ({type(error).__name__}: {error}); offline, download it elsewhere "
                f"and put it at {path}"
            ) from error
    size_mb = path.stat().st_size / 2**20
    if model.size_mb is not None and abs(size_mb - model.size_mb) > SIZE_TOLERANCE * model.size_mb:
        raise ValueError(
            f"{path} has {size_mb:.0f} MB, model_zoo.md gives {model.size_mb} MB for {model.url}: "
            "an incomplete or different file; delete it to download again"
        )
    return path


def converted_state(weights: str) -> dict[str, torch.Tensor]:
    """The zoo state dict of a published model, converted once and kept beside its tarball."""
    model = published(weights)
    target = cache_dir() / f"{model.name}.pt"
    if not target.is_file():
        state = convert_deeplab_tf(download(model), output_stride=model.output_stride).state_dict()
        atomic_write(target, lambda f: torch.save(state, f))
    return torch.load(target, map_location="cpu", weights_only=True)


def encoder_state(weights: str, encoder: str) -> dict[str, torch.Tensor]:
    """The backbone of a published model, in the zoo encoder's layout (for ``encoder_weights``)."""
    model = published(weights)
    if model.encoder != encoder:
        raise ValueError(f"{weights} holds a {model.encoder} backbone, not {encoder}")
    prefix = "encoder."
    return {k[len(prefix) :]: v for k, v in converted_state(weights).items() if k.startswith(prefix)}


class DeepLabTF:
    """TF DeepLab's published models as a weight source (``"deeplab-tf:NAME"``, see :mod:`zoo.registry`)."""

    def model_state(self, weights: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        spec = published(weights)
        if spec.decoder is None:
            raise ValueError(f"{weights} is a backbone: pass it as encoder_weights")
        class_names, palette = dataset_classes(spec.num_classes)
        args = {"encoder": spec.encoder, "decoder": spec.decoder, "num_classes": spec.num_classes}
        args |= {"semantics": "deeplab-tf", "class_names": class_names, "palette": palette}
        args |= dict(spec.build)  # the output stride stays the caller's (MobileNetV3 rows: pass 32, model_zoo.md's)
        return args, converted_state(weights)

    def encoder_state(self, weights: str, encoder: str) -> dict[str, torch.Tensor]:
        return encoder_state(weights, encoder)
