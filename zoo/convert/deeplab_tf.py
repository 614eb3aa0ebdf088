"""Google's TF DeepLab checkpoints (tensorflow/models, research/deeplab) as zoo models with TF's exact outputs.

The variant is read from the checkpoint's variable names and shapes: the backbone scope (``xception_41``,
``xception_65``, ``xception_71``) and its unit counts, ASPP (``aspp0``, ``image_pooling``, ``concat_projection``)
or the dense prediction cell (``meta_architecture/branch*``), the decoder (``decoder/feature_projection0``) and
the class count (``logits/semantic``). The zoo model is built with ``semantics="deeplab-tf"`` and filled
variable by variable; a checkpoint that does not fit raises ``ValueError`` naming the first variable that
does not.

Checkpoints are read with TensorFlow's own reader (``tf.train.load_checkpoint``, the ``tf`` extra:
``pip install zoo[tf]``); TensorFlow is imported only here, and only when a checkpoint is read.
"""

from __future__ import annotations

import re
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.convert.ade20k import ADE20K_CLASSES
from zoo.convert.deeplab_tf_mobilenet import is_mobilenet, mobilenet_model
from zoo.convert.tf_rows import (
    Transform,
    _bn,
    _conv,
    _conv_bn,
    _depthwise,
    _model_variables,
    _pool_last,
    _separable,
    _vector,
    fill,
)
from zoo.data.cityscapes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from zoo.data.io import VOC_CLASSES, voc_palette
from zoo.models import SegmentationModel, build_model

# Entry-flow blocks and middle-flow units of each backbone (research/deeplab/core/xception.py).
BACKBONES = {
    "xception_41": ("xception41", 3, 8),
    "xception_65": ("xception65", 3, 16),
    "xception_71": ("xception71", 5, 16),
}
# Model scopes outside the backbone; a variable under one of them that fits nothing is an error.
HEAD_SCOPES = ("aspp", "image_pooling/", "concat_projection/", "decoder/", "meta_architecture/", "logits/")


@dataclass(frozen=True)
class Variant:
    """What a TF DeepLab checkpoint holds.

    Args:
        scope: the backbone's variable scope (``xception_65``).
        head: "aspp", "dpc", or None (a backbone alone, e.g. an ImageNet checkpoint).
        decoder: whether it has the DeepLabV3+ decoder.
        num_classes: classes of ``logits/semantic``, or None.
    """

    scope: str
    head: str | None
    decoder: bool
    num_classes: int | None

    @property
    def encoder(self) -> str:
        return BACKBONES[self.scope][0]

    @property
    def decoder_name(self) -> str:
        return "dpc" if self.head == "dpc" else "deeplabv3plus"

    def describe(self) -> str:
        head = {"aspp": "ASPP", "dpc": "dense prediction cell", None: "no head"}[self.head]
        parts = [self.encoder, head, "decoder" if self.decoder else "no decoder"]
        return " + ".join(parts) + (f", {self.num_classes} classes" if self.num_classes else "")


class Checkpoint:
    """A TF checkpoint's variable shapes and values, read with ``tf.train.load_checkpoint``.

    Args:
        prefix: the checkpoint prefix (``.../model.ckpt``; ``.index`` and ``.data-*`` beside it).
        source: how to name it in errors (the path the user gave).
    """

    def __init__(self, prefix: Path, source: str) -> None:
        try:
            import tensorflow as tf
        except ImportError as error:
            raise ImportError(
                "reading TF checkpoints needs TensorFlow: pip install 'zoo[tf]' (tensorflow-cpu)"
            ) from error
        self.source = source
        try:
            self._reader = tf.train.load_checkpoint(str(prefix))
        except Exception as error:  # noqa: BLE001 - TF raises its own errors for unreadable files
            raise ValueError(f"{source}: not a readable TF checkpoint ({type(error).__name__}: {error})") from None
        self.shapes = {k: tuple(v) for k, v in self._reader.get_variable_to_shape_map().items()}

    def get(self, name: str) -> np.ndarray:
        return np.asarray(self._reader.get_tensor(name), dtype=np.float32)


def find_prefix(folder: Path) -> Path:
    """The one checkpoint prefix in ``folder`` (a ``*.index`` file), searched recursively."""
    indexes = sorted(folder.rglob("*.index"))
    if len(indexes) != 1:
        found = ", ".join(str(p) for p in indexes) or "none"
        raise ValueError(f"{folder}: expected one TF checkpoint (a *.index file), found {found}")
    return indexes[0].with_suffix("")


@contextmanager
def open_checkpoint(src: str | Path) -> Iterator[Checkpoint]:
    """A :class:`Checkpoint` from a prefix, a folder holding one, or an official ``.tar.gz``.

    Args:
        src: ``.../model.ckpt`` (the prefix), a folder, or a ``.tar.gz`` as downloaded (unpacked to a temporary
            folder, regular files only, removed afterwards).

    Raises:
        FileNotFoundError: nothing at ``src``.
        ValueError: no or several checkpoints there, or one TensorFlow cannot read.
    """
    path = Path(src)
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar")):
        with tempfile.TemporaryDirectory(prefix="zoo-deeplab-tf-") as tmp:
            _unpack(path, Path(tmp))
            yield Checkpoint(find_prefix(Path(tmp)), str(path))
        return
    if path.is_dir():
        yield Checkpoint(find_prefix(path), str(path))
        return
    if Path(f"{path}.index").is_file():
        yield Checkpoint(path, str(path))
        return
    raise FileNotFoundError(f"no TF checkpoint at {path}: give a prefix (.../model.ckpt), a folder or a .tar.gz")


def _unpack(path: Path, folder: Path) -> None:
    """Extract the regular files of the archive ``path`` into ``folder``; a truncated or non-tar file raises
    ``ValueError`` naming it."""
    try:
        with tarfile.open(path) as archive:
            members = [m for m in archive.getmembers() if m.isfile()]
            archive.extractall(folder, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError, zlib.error):
        raise ValueError(
            f"{path} is not a complete tar archive (truncated, or not a tar file); download it again"
        ) from None


def detect(ckpt: Checkpoint) -> Variant:
    """Read the variant from the variable names and shapes.

    Raises:
        ValueError: no Xception backbone, or unit counts that fit no variant (the message names a variable).
    """
    names = _model_variables(ckpt.shapes)
    scopes = [n.split("/")[0] for n in names if re.fullmatch(r"xception_(41|65|71)/entry_flow/conv1_1/weights", n)]
    if len(scopes) != 1:
        first = names[0] if names else "(no variables)"
        raise ValueError(
            f"{ckpt.source}: no single xception_41/65/71 backbone (found {scopes or 'none'}); first variable: {first}"
        )
    scope = scopes[0]
    _, entry, middle = BACKBONES[scope]
    for flow, expected in (("entry_flow", entry), ("middle_flow/block1", middle)):
        pattern = rf"{scope}/{flow}/(block|unit_)(\d+)/"
        found = {int(m[2]) for n in names if (m := re.match(pattern, n))}
        if found != set(range(1, expected + 1)):
            extra = sorted(found - set(range(1, expected + 1)))
            culprit = (
                next((n for n in names if re.match(rf"{scope}/{flow}/(block|unit_){extra[0]}/", n)), scope)
                if extra
                else scope
            )
            raise ValueError(
                f"{ckpt.source}: {scope} has {expected} units in {flow}, the checkpoint {sorted(found)}; "
                f"first variable that does not fit: {culprit}"
            )
    head = "dpc" if "meta_architecture/concat_projection/weights" in ckpt.shapes else None
    head = head or ("aspp" if "concat_projection/weights" in ckpt.shapes else None)
    decoder = "decoder/feature_projection0/weights" in ckpt.shapes
    logits = ckpt.shapes.get("logits/semantic/weights")
    if head is not None and not decoder:
        raise ValueError(
            f"{ckpt.source}: a head without the decoder is not supported; first variable: concat_projection"
        )
    if (head is None) != (logits is None):
        what = "logits/semantic/weights" if logits is not None else "concat_projection/weights"
        raise ValueError(f"{ckpt.source}: logits and head come together; variable {what} has no counterpart")
    return Variant(scope, head, decoder, int(logits[-1]) if logits is not None else None)


def unit_scopes(scope: str) -> list[str]:
    """TF scopes of the backbone's units, in the order of the zoo's ``blocks``."""
    _, entry, middle = BACKBONES[scope]
    units = [f"entry_flow/block{i}/unit_1" for i in range(1, entry + 1)]
    units += [f"middle_flow/block1/unit_{i}" for i in range(1, middle + 1)]
    units += ["exit_flow/block1/unit_1", "exit_flow/block2/unit_1"]
    return [f"{scope}/{u}/xception_module" for u in units]


def backbone_table(scope: str, prefix: str = "encoder.") -> list[tuple[str, str, Transform]]:
    """(zoo key, TF variable, transform) for every backbone tensor."""
    table = []
    for i in (1, 2):
        table += [(f"{prefix}stem.conv{i}.weight", f"{scope}/entry_flow/conv1_{i}/weights", _conv)]
        table += _bn(f"{prefix}stem.bn{i}", f"{scope}/entry_flow/conv1_{i}")
    for b, unit in enumerate(unit_scopes(scope)):
        for c in range(3):
            zoo, tf = f"{prefix}blocks.{b}.convs.{c}", f"{unit}/separable_conv{c + 1}"
            table += [(f"{zoo}.conv_dw.weight", f"{tf}_depthwise/depthwise_weights", _depthwise)]
            table += _bn(f"{zoo}.bn_dw", f"{tf}_depthwise")
            table += [(f"{zoo}.conv_pw.weight", f"{tf}_pointwise/weights", _conv)]
            table += _bn(f"{zoo}.bn_pw", f"{tf}_pointwise")
        table += [(f"{prefix}blocks.{b}.shortcut.conv.weight", f"{unit}/shortcut/weights", _conv)]
        table += _bn(f"{prefix}blocks.{b}.shortcut.bn", f"{unit}/shortcut")
    return table


def head_table(variant: Variant, num_branches: int) -> list[tuple[str, str, Transform]]:
    """(zoo key, TF variable, transform) for the head, the decoder and the logits."""
    d = "decoder."
    if variant.head == "dpc":
        table = [
            x for k in range(num_branches) for x in _separable(f"{d}dpc.branches.{k}", f"meta_architecture/branch{k}")
        ]
        table += _conv_bn(f"{d}dpc.project", "meta_architecture/concat_projection")
    else:
        atrous = num_branches - 2
        table = _conv_bn(f"{d}aspp.branches.0", "aspp0")
        table += [x for k in range(1, atrous + 1) for x in _separable(f"{d}aspp.branches.{k}", f"aspp{k}")]
        table += _conv_bn(f"{d}aspp.branches.{atrous + 1}.conv", "image_pooling")
        pool_last = lambda w: _pool_last(w, num_branches)  # noqa: E731
        table += [(f"{d}aspp.project.conv.weight", "concat_projection/weights", pool_last)]
        table += _bn(f"{d}aspp.project.bn", "concat_projection")
    table += _conv_bn(f"{d}low_level", "decoder/feature_projection0")
    table += [x for k in range(2) for x in _separable(f"{d}refine.{k}", f"decoder/decoder_conv{k}")]
    table += [(f"{d}classifier.weight", "logits/semantic/weights", _conv)]
    table += [(f"{d}classifier.bias", "logits/semantic/biases", _vector)]
    return table


def _check_all_used(ckpt: Checkpoint, variant: Variant, used: set[str]) -> None:
    scopes = (f"{variant.scope}/", *HEAD_SCOPES)
    classifier = f"{variant.scope}/logits/"  # an ImageNet checkpoint's classifier: not part of a segmentation model
    for name in _model_variables(ckpt.shapes):
        if name.startswith(scopes) and not name.startswith(classifier) and name not in used:
            raise ValueError(f"{ckpt.source}: variable {name} fits no part of the detected {variant.describe()}")


def dataset_classes(num_classes: int) -> tuple[list[str] | None, list[list[int]] | None]:
    """Class names and palette of the dataset the official checkpoints with ``num_classes`` were trained on."""

    known = {
        len(VOC_CLASSES): (VOC_CLASSES, voc_palette(len(VOC_CLASSES))),
        len(CITYSCAPES_CLASSES): (CITYSCAPES_CLASSES, CITYSCAPES_PALETTE),
        len(ADE20K_CLASSES): (ADE20K_CLASSES, voc_palette(len(ADE20K_CLASSES))),
    }
    if num_classes not in known:
        return None, None
    names, palette = known[num_classes]
    return list(names), [list(c) for c in palette]


def convert_deeplab_tf(src: str | Path, output_stride: int = 16, num_classes: int | None = None) -> SegmentationModel:
    """A TF DeepLab checkpoint as a zoo model (``semantics="deeplab-tf"``) whose outputs equal the TF graph's.

    Args:
        src: a checkpoint prefix (``.../model.ckpt``), a folder holding one, or an official ``.tar.gz``.
        output_stride: 8 or 16 (the weights are the same; ASPP rates follow: (12, 24, 36) at 8, (6, 12, 18) at 16);
            32 for the MobileNetV3 checkpoints as model_zoo.md evaluates them.
        num_classes: for a backbone-only (ImageNet) checkpoint, the classes of the freshly initialised head
            (default 21); for a segmentation checkpoint it must equal the checkpoint's.

    Returns:
        The model in eval mode, with the class names and palette of its dataset (VOC, Cityscapes, ADE20K by
        class count).

    Raises:
        FileNotFoundError: nothing at ``src``.
        ValueError: a checkpoint that does not fit (the message names the first variable that does not).
        ImportError: TensorFlow is not installed.
    """
    with open_checkpoint(src) as ckpt:
        if is_mobilenet(ckpt.shapes):
            model, found = mobilenet_model(ckpt, output_stride)
            if num_classes not in (None, found.num_classes):
                raise ValueError(
                    f"{ckpt.source}: the checkpoint predicts {found.num_classes} classes, not {num_classes}"
                )
            model.class_names, model.palette = dataset_classes(found.num_classes)
            return model.eval()
        variant = detect(ckpt)
        if variant.num_classes and num_classes not in (None, variant.num_classes):
            raise ValueError(f"{ckpt.source}: the checkpoint predicts {variant.num_classes} classes, not {num_classes}")
        classes = variant.num_classes or num_classes or 21
        model = build_model(variant.encoder, variant.decoder_name, classes, output_stride, semantics="deeplab-tf")
        table = backbone_table(variant.scope)
        if variant.head is not None:
            branches = len(model.decoder.dpc.branches) if variant.head == "dpc" else len(model.decoder.aspp.branches)
            table += head_table(variant, branches)
        state, used = fill(model.state_dict(), table, ckpt)
        _check_all_used(ckpt, variant, used)
    model.load_state_dict(state)
    if variant.num_classes:
        model.class_names, model.palette = dataset_classes(variant.num_classes)
    return model.eval()


__all__ = ["Checkpoint", "Variant", "convert_deeplab_tf", "detect", "open_checkpoint"]
