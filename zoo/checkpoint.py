"""The zoo's file format: one reader and one writer for model files and training checkpoints.

A zoo model file is ``{"zoo": meta, "state_dict": weights}`` written by :func:`save_model`; a training
(Lightning) checkpoint carries the same ``"zoo"`` entry beside Lightning's own keys, with the model's weights
under the ``model.`` prefix. Every file is read by :func:`read_checkpoint` with ``torch.load(weights_only=True)``:
tensors and plain data only, never code, and a file that is not a checkpoint is named in a one-line error saying
what it looks like. Writes go to a temporary file in the destination folder, are flushed to disk and renamed, so
a reader never sees a half-written file and a failed write leaves the previous file as it was.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from zoo.fileio import atomic_write
from zoo.models import SegmentationModel, build_model, plain
from zoo.registry import weight_source

LIGHTNING_PREFIX = "model."

# The first bytes of files people mistake for checkpoints, and what to call them.
_SIGNATURES = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"BM", "a BMP image"),
    (b"\x1f\x8b", "a gzip archive (a TF checkpoint tarball? see `zoo convert`)"),
    (b"{", "a JSON or text file"),
)


def describe_file(path: Path) -> str:
    """What a file that is not a readable checkpoint looks like, in a few words (for error messages)."""
    size = path.stat().st_size
    if size == 0:
        return "an empty file (0 bytes)"
    with path.open("rb") as f:
        head = f.read(512)
    for magic, what in _SIGNATURES:
        if head.startswith(magic):
            return what
    if head.startswith(b"PK\x03\x04"):
        return f"a truncated or corrupt checkpoint ({size} bytes)" if not zipfile.is_zipfile(path) else "a zip archive"
    mentions_onnx = b"onnx" in head.lower() or "onnx" in path.name.lower()
    if path.suffix.lower() == ".onnx" or (head[:1] == b"\x08" and mentions_onnx):  # protobuf field 1: ir_version
        return "an ONNX model (run it with Predictor.from_onnx, or give it as the onnx file)"
    try:
        head.decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return f"not a PyTorch checkpoint ({size} bytes of unknown data)"


def _is_torch_file(path: Path) -> bool:
    """Whether a file has ``torch.save``'s layout: a complete zip archive, or the legacy pickle format."""
    with path.open("rb") as f:
        head = f.read(4)
    return (head.startswith(b"PK\x03\x04") and zipfile.is_zipfile(path)) or head[:1] == b"\x80"


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a zoo model file or training checkpoint: tensors and plain data only.

    Args:
        path: the file.
        map_location: ``torch.load``'s ``map_location``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: one line naming the file: not a checkpoint (and what it looks like instead), a checkpoint
            holding objects other than tensors and plain data (never unpickled), or one without the zoo's keys.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    if not _is_torch_file(path):
        raise ValueError(f"{path} is not a checkpoint: it is {describe_file(path)}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        # weights_only names the first class or function the file would have imported; anything else (an unknown
        # opcode, a bad header) means the bytes are not a pickle of a checkpoint at all
        blocked = [line.strip() for line in str(error).splitlines() if "GLOBAL" in line or "global" in line]
        if blocked:
            raise ValueError(
                f"{path} holds objects other than tensors and plain data; not loaded ({blocked[0]})"
            ) from None
        raise ValueError(f"{path} is not a checkpoint: it is {describe_file(path)}") from None
    except (RuntimeError, EOFError, OSError, ValueError, UnicodeDecodeError, AttributeError):
        raise ValueError(f"{path} is not a checkpoint: it is {describe_file(path)}") from None
    if not isinstance(checkpoint, dict) or "zoo" not in checkpoint or "state_dict" not in checkpoint:
        raise ValueError(f"{path} is not a zoo model file: expected the keys 'zoo' and 'state_dict'")
    return checkpoint


def model_state(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model's weights of a checkpoint read by :func:`read_checkpoint` (Lightning's ``model.`` prefix removed)."""
    state = checkpoint["state_dict"]
    if any(k.startswith(LIGHTNING_PREFIX) for k in state):
        return {k[len(LIGHTNING_PREFIX) :]: v for k, v in state.items() if k.startswith(LIGHTNING_PREFIX)}
    return state


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
        "build_args": plain(model.build_args),
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
    """Save ``{"zoo": meta, "state_dict": model.state_dict()}`` to ``path`` atomically (see :func:`model_meta`).

    Args:
        model: the model to save.
        path: output file (parent folders are created).
        class_names: class names (default: ``model.class_names``).
        palette: one RGB colour per class (default: ``model.palette``).

    Raises:
        ValueError: the model has non-finite weights (nothing is written).
    """
    if not isinstance(model, SegmentationModel):
        raise TypeError(f"save_model needs a SegmentationModel (from build_model), got {type(model).__name__}")
    state = model.state_dict()
    return write_checkpoint(path, {"zoo": model_meta(model, class_names, palette), "state_dict": state})


def write_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> Path:
    """``torch.save`` of ``checkpoint`` to ``path``, atomically; refused (nothing written) when its ``state_dict``
    holds non-finite weights. Model files and training checkpoints alike are written here."""
    bad = non_finite_tensors(checkpoint.get("state_dict", {}))
    if bad:
        raise ValueError(f"not saving {path}: non-finite weights (NaN or infinity) in {', '.join(bad[:3])}")
    return atomic_write(path, lambda f: torch.save(checkpoint, f))


def non_finite_tensors(tensors: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> list[str]:
    """Names of the floating-point tensors that hold NaN or infinity: the one test of "non-finite" in the package.

    Args:
        tensors: a state dict, or ``(name, tensor)`` pairs (``module.named_parameters()``, ...); entries that are
            not floating-point tensors are skipped.
    """
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    return [k for k, v in items if torch.is_tensor(v) and v.is_floating_point() and not bool(v.isfinite().all())]


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[SegmentationModel, dict[str, Any]]:
    """The model of a :func:`save_model` file or training (Lightning) checkpoint, and its description, from one read.

    The model is built from the stored ``build_args`` with ``encoder_weights=None``, then the stored weights
    are loaded. The returned model is in eval mode, with ``class_names`` and ``palette`` set from the file; the
    description is ``checkpoint["zoo"]`` (see :func:`model_meta`).

    Args:
        path: the file.
        map_location: where to put the weights (``torch.load``'s ``map_location``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a zoo model or checkpoint, holds other objects or non-finite weights, or its
            weights do not fit its build arguments (the message lists expected against found).
    """
    path = Path(path)
    checkpoint = read_checkpoint(path, map_location)
    return _build(path, checkpoint, map_location), checkpoint["zoo"]


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> SegmentationModel:
    """Rebuild a model from a file written by :func:`save_model` or a training checkpoint (see
    :func:`load_checkpoint`, which also returns its description)."""
    return load_checkpoint(path, map_location)[0]


def _build(path: Path, checkpoint: dict[str, Any], map_location: str | torch.device) -> SegmentationModel:
    """The model a checkpoint read by :func:`read_checkpoint` describes, with its weights."""
    meta = checkpoint["zoo"]
    state = model_state(checkpoint)
    bad = non_finite_tensors(state)
    if bad:
        raise ValueError(f"{path} holds non-finite weights (NaN or infinity) in {', '.join(bad[:3])}")
    args = {**meta["build_args"], "encoder_weights": None}
    model = build_model(**args)
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise ValueError(_misfit(path, model.state_dict(), state, args)) from None
    model.class_names = list(meta["class_names"]) if meta.get("class_names") is not None else None
    model.palette = [list(c) for c in meta["palette"]] if meta.get("palette") is not None else None
    return model.to(map_location).eval()


def load_matching(model: torch.nn.Module, source: str | Path) -> list[str]:
    """Load into ``model`` the tensors of ``source`` whose name and shape fit; the others keep their values.

    Args:
        model: the model to fill.
        source: a zoo model file or training checkpoint, or published weights (``"PREFIX:NAME"``).

    Returns:
        The names of ``model``'s tensors that were not loaded (e.g. a classifier for another class count).
    """
    published = weight_source(source)
    state = published.model_state(str(source))[1] if published is not None else model_state(read_checkpoint(source))
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    if not fitting:
        raise ValueError(f"{source}: no tensor fits the model (is it a model of another architecture?)")
    model.load_state_dict(fitting, strict=False)
    return sorted(k for k in own if k not in fitting)


def _misfit(path: Path, expected: dict[str, Any], found: dict[str, Any], args: dict[str, Any]) -> str:
    problems = [
        f"{k}: expected {tuple(v.shape)}, found {tuple(found[k].shape)}"
        for k, v in expected.items()
        if k in found and found[k].shape != v.shape
    ]
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    if missing:
        problems.append(f"{len(missing)} expected tensors not found (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors found (e.g. {', '.join(unexpected[:3])})")
    what = f"encoder {args['encoder']!r}, decoder {args['decoder']!r}, {args['num_classes']} classes"
    return f"{path}: the weights do not fit the model its build_args describe ({what}): " + "; ".join(problems)


__all__ = [
    "LIGHTNING_PREFIX",
    "load_checkpoint",
    "load_matching",
    "load_model",
    "model_meta",
    "model_state",
    "non_finite_tensors",
    "read_checkpoint",
    "save_model",
    "write_checkpoint",
]
