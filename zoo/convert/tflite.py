"""Google's TFLite exports of TF DeepLab (MobileNetV2 + ASPP, float or uint8-quantized) as zoo models.

The file is read as data (:mod:`zoo.convert.tflite_file`, the ``tflite`` flatbuffer package). Each conv's layer is
its weight tensor's TF scope (``MobilenetV2/expanded_conv_3/depthwise``, ``aspp0``, ``image_pooling``,
``concat_projection``, ``logits/semantic``); the backbone and head are detected from these scopes and the shapes
(depth multiplier: the last unit's channels / 320; output stride: the product of the backbone's strides; classes:
the logits' channels). The zoo model is ``mobilenetv2`` + ``deeplabv3`` with ``atrous_rates=()``,
``conv3x3=False`` and ``semantics="deeplab-tf"`` (every resize of these graphs has ``align_corners=True``,
``half_pixel_centers=False``); each conv's stride, dilation and fused activation are checked against the zoo
layer it fills. Quantized weights and biases are dequantized, ``(q - zero_point) * scale`` per tensor or per
channel, and run in float32. TFLite folds BatchNorm into the convs: the zoo's BatchNorms become identities plus
the folded bias. The input convention (float in [-1, 1], or uint8 with a scale and zero point) becomes the
model's mean and std, so ``model(x)`` takes RGB in 0..1 as every zoo model. A graph ending in ``ARG_MAX`` gives
the logits before it. Anything that does not map raises ``ValueError`` naming the op or tensor.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from zoo.convert.deeplab_tf import dataset_classes
from zoo.convert.tflite_file import SAME, Graph, Op, read_tflite
from zoo.data.io import voc_palette
from zoo.models import SegmentationModel, build_model

CONVS = ("CONV_2D", "DEPTHWISE_CONV_2D")
# Ops that carry no weights; their options are checked where they could change the output.
PASS_THROUGH = ("ADD", "AVERAGE_POOL_2D", "RESIZE_BILINEAR", "CONCATENATION", "QUANTIZE", "DEQUANTIZE")
LAST_UNIT_CHS = 320  # MobileNetV2's last unit at depth multiplier 1
HEAD = {
    "aspp0": "decoder.aspp.branches.0",
    "image_pooling": "decoder.aspp.branches.{pool}.conv",
    "concat_projection": "decoder.aspp.project",
    "logits/semantic": "decoder.classifier",
}
ZOO_CONCAT_ORDER = ("aspp0", "image_pooling")
UNIT = re.compile(r"^MobilenetV2/expanded_conv(?:_(\d+))?/(expand|depthwise|project)$")


def scope(graph: Graph, op: Op) -> str:
    """The TF scope of a conv: its weight tensor's first name, without the variable's own name."""
    return graph.tensors[op.inputs[1]].name.split(";")[0].rsplit("/", 1)[0]


def zoo_module(tf_scope: str, pool_index: int) -> str | None:
    """The zoo module a TF scope fills, or None."""
    if tf_scope == "MobilenetV2/Conv":
        return "encoder.stem"
    unit = UNIT.match(tf_scope)
    if unit:
        return f"encoder.blocks.{int(unit[1] or 0)}.{unit[2]}"
    return HEAD[tf_scope].format(pool=pool_index) if tf_scope in HEAD else None


def _convs(graph: Graph) -> list[Op]:
    convs = [op for op in graph.ops if op.kind in CONVS]
    for op in graph.ops:
        last = op.kind == "ARG_MAX" and op.outputs == graph.outputs
        if op.kind not in (*CONVS, *PASS_THROUGH) and not last:
            raise ValueError(f"{graph.path}: {op.describe(graph.tensors)} has no zoo counterpart")
    if not convs or not scope(graph, convs[0]).startswith("MobilenetV2/"):
        first = graph.tensors[convs[0].inputs[1]].name if convs else "none"
        raise ValueError(f"{graph.path}: not a TF DeepLab MobileNetV2 export (first conv weights: {first!r})")
    return convs


def _architecture(graph: Graph, convs: list[Op]) -> dict:
    """Depth multiplier, output stride and classes, from the shapes and strides of the convs."""
    by_scope = {scope(graph, op): op for op in convs}
    for needed in (*HEAD, "MobilenetV2/expanded_conv_16/project"):
        if needed not in by_scope:
            raise ValueError(f"{graph.path}: no conv under the scope {needed!r}: not DeepLabV3 + MobileNetV2's ASPP")
    last_chs = graph.tensors[by_scope["MobilenetV2/expanded_conv_16/project"].inputs[1]].shape[0]
    strides = [op.options["StrideH"] for op in convs if scope(graph, op).startswith("MobilenetV2/")]
    num_classes = graph.tensors[by_scope["logits/semantic"].inputs[1]].shape[0]
    return {"width": last_chs / LAST_UNIT_CHS, "output_stride": int(np.prod(strides)), "num_classes": num_classes}


def input_normalisation(graph: Graph) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The model's mean and std (RGB in 0..1) from the graph's input: float in [-1, 1] (DeepLab's MobileNet
    preprocessing), or uint8/int8 ``real = scale * (q - zero_point)`` with ``q`` the raw 0..255 (or -128..127)
    pixel."""
    tensor = graph.tensors[graph.inputs[0]]
    if tensor.dtype == np.float32:
        return (0.5,) * 3, (0.5,) * 3
    if tensor.dtype in (np.uint8, np.int8) and tensor.scale.size == 1:
        offset = 0 if tensor.dtype == np.uint8 else 128
        mean = (float(tensor.zero_point[0]) + offset) / 255
        return (mean,) * 3, (1 / (255 * float(tensor.scale[0])),) * 3
    raise ValueError(f"{graph.path}: input {tensor.name!r} ({tensor.dtype}) is neither float nor quantized uint8/int8")


def _conv_weight(graph: Graph, op: Op) -> torch.Tensor:
    values = graph.tensors[op.inputs[1]].values
    if values is None:
        raise ValueError(f"{graph.path}: {op.describe(graph.tensors)} has no constant weights")
    if op.kind == "DEPTHWISE_CONV_2D":  # 1 x kh x kw x C -> C x 1 x kh x kw
        return torch.from_numpy(values[0].transpose(2, 0, 1)[:, None].copy())
    return torch.from_numpy(values.transpose(0, 3, 1, 2).copy())  # O x kh x kw x I -> O x I x kh x kw


def _bias(graph: Graph, op: Op, channels: int) -> torch.Tensor:
    if len(op.inputs) < 3 or op.inputs[2] < 0:
        return torch.zeros(channels)
    values = graph.tensors[op.inputs[2]].values
    if values is None:
        raise ValueError(f"{graph.path}: {op.describe(graph.tensors)} has a bias that is not a constant")
    return torch.from_numpy(values.astype(np.float32))


def _check_layer(graph: Graph, op: Op, conv: nn.Conv2d, act: str | None) -> None:
    """Stride, dilation, padding and activation of the TFLite op equal the zoo layer's."""
    options = op.options
    tf = (options["StrideH"], options["StrideW"], options["DilationHFactor"], options["DilationWFactor"])
    zoo = (*conv.stride, *conv.dilation)
    same = options["Padding"] == SAME or conv.kernel_size == (1, 1)
    if tf != zoo or not same or op.activation != act:
        raise ValueError(
            f"{graph.path}: {op.describe(graph.tensors)} has stride/dilation {tf}, padding {options['Padding']}, "
            f"activation {op.activation}; the zoo layer has {zoo}, SAME, {act}"
        )


def _activation(module: nn.Module) -> str | None:
    act = getattr(module, "act", None)
    return "relu6" if isinstance(act, nn.ReLU6) else "relu" if isinstance(act, nn.ReLU) else None


def _fill(graph: Graph, op: Op, module: nn.Module, weight: torch.Tensor) -> None:
    """Folded conv weight and bias into a zoo conv(-BN-act) or a plain conv with bias (the classifier)."""
    conv = module if isinstance(module, nn.Conv2d) else module.conv
    if tuple(conv.weight.shape) != tuple(weight.shape):
        raise ValueError(
            f"{graph.path}: tensor {graph.tensors[op.inputs[1]].name!r} has the shape {tuple(weight.shape)} "
            f"(as torch), the zoo layer {tuple(conv.weight.shape)}"
        )
    _check_layer(graph, op, conv, _activation(module))
    bias = _bias(graph, op, weight.shape[0])
    conv.weight.copy_(weight)
    if isinstance(module, nn.Conv2d):
        module.bias.copy_(bias)
        return
    bn = module.bn  # the folded BatchNorm: an identity, then the bias
    bn.weight.fill_(1.0)
    bn.bias.copy_(bias)
    bn.running_mean.zero_()
    bn.running_var.fill_(1.0 - bn.eps)


def _concat_order(graph: Graph) -> list[str]:
    """The scopes of the branches the ASPP concatenation reads, in its order (through resizes and requantizes)."""
    concat = next(op for op in graph.ops if op.kind == "CONCATENATION")
    order = []
    for tensor in concat.inputs:
        op = graph.producer(tensor)
        while op is not None and op.kind not in CONVS:
            op = graph.producer(op.inputs[0])
        order.append(scope(graph, op) if op is not None else graph.tensors[tensor].name)
    if sorted(order) != sorted(ZOO_CONCAT_ORDER) or concat.options["Axis"] not in (3, -1):
        raise ValueError(f"{graph.path}: {concat.describe(graph.tensors)} concatenates {order}, not aspp0 + pooling")
    return order


def _check_rest(graph: Graph, model: SegmentationModel) -> None:
    """Residual adds, global pooling and resizes as the zoo model computes them."""
    adds = sum(op.kind == "ADD" for op in graph.ops)
    residuals = sum(block.residual for block in model.encoder.blocks)
    if adds != residuals:
        raise ValueError(f"{graph.path}: {adds} ADD ops; the zoo's MobileNetV2 has {residuals} residual units")
    for op in graph.ops:
        if op.kind == "AVERAGE_POOL_2D":
            size = graph.tensors[op.inputs[0]].shape[1:3]
            if (op.options["FilterHeight"], op.options["FilterWidth"]) != tuple(size):
                raise ValueError(f"{graph.path}: {op.describe(graph.tensors)} is not a global pooling of {size}")
        if op.kind == "RESIZE_BILINEAR" and (not op.options["AlignCorners"] or op.options["HalfPixelCenters"]):
            raise ValueError(
                f"{graph.path}: {op.describe(graph.tensors)} resizes with align_corners={op.options['AlignCorners']}"
                f", half_pixel_centers={op.options['HalfPixelCenters']}; the zoo's deeplab-tf semantics have "
                "align_corners=True, half_pixel_centers=False"
            )


def read_class_names(path: str | Path, num_classes: int) -> list[str]:
    """Class names from a text file, one a line, exactly ``num_classes`` of them; the first blank line ends the
    list (text after it is a comment, as in the label files published beside Google's TFLite models)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no class-names file at {path}")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").strip().splitlines()]
    names = lines[: lines.index("")] if "" in lines else lines
    if len(names) != num_classes:
        raise ValueError(f"{path} names {len(names)} classes; the model predicts {num_classes}")
    return names


def convert_deeplab_tflite(
    path: str | Path, class_names: str | Path | Sequence[str] | None = None
) -> SegmentationModel:
    """A TFLite export of TF DeepLab (MobileNetV2, ASPP without atrous branches) as a zoo model.

    Args:
        path: the ``.tflite`` file (float32 or uint8/int8-quantized weights).
        class_names: a text file with one class name a line, or the names; default: VOC's 21 classes for a
            21-class model, none otherwise.

    Returns:
        The model in eval mode (``semantics="deeplab-tf"``), taking RGB in 0..1, with class names and palette.

    Raises:
        FileNotFoundError: no file at ``path`` or ``class_names``.
        ValueError: not a TFLite file, or an op or tensor the zoo model has no counterpart for (named).
        ImportError: the ``tflite`` package is missing.
    """
    graph = read_tflite(path)
    convs = _convs(graph)
    arch = _architecture(graph, convs)
    mean, std = input_normalisation(graph)
    model = build_model(
        "mobilenetv2",
        "deeplabv3",
        arch["num_classes"],
        arch["output_stride"],
        encoder_kwargs={"width": arch["width"]},
        mean=mean,
        std=std,
        semantics="deeplab-tf",
        atrous_rates=[],
        conv3x3=False,
    ).eval()
    _check_rest(graph, model)
    order = _concat_order(graph)
    pool = len(model.decoder.aspp.branches) - 1
    filled = set()
    with torch.no_grad():
        for op in convs:
            name = zoo_module(scope(graph, op), pool)
            if name is None or name in filled:
                what = "maps to no zoo layer" if name is None else f"fills {name} a second time"
                raise ValueError(f"{graph.path}: tensor {graph.tensors[op.inputs[1]].name!r} {what}")
            weight = _conv_weight(graph, op)
            if name == "decoder.aspp.project":  # TF's concatenation order -> the zoo's [aspp0, image pooling]
                chunks = dict(zip(order, weight.chunk(len(order), dim=1), strict=True))
                weight = torch.cat([chunks[s] for s in ZOO_CONCAT_ORDER], dim=1)
            _fill(graph, op, model.get_submodule(name), weight)
            filled.add(name)
    _check_all_filled(graph, model, filled)
    names = list(class_names) if isinstance(class_names, (list, tuple)) else None
    if class_names is not None and names is None:
        names = read_class_names(class_names, model.num_classes)
    if names is None:
        model.class_names, model.palette = (
            dataset_classes(model.num_classes) if model.num_classes == 21 else (None,) * 2
        )
    else:
        model.class_names, model.palette = names, [list(c) for c in voc_palette(len(names))]
    return model


def _check_all_filled(graph: Graph, model: SegmentationModel, filled: set[str]) -> None:
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    missing = [n for n in convs if n not in filled and n.rsplit(".", 1)[0] not in filled]
    if missing:
        raise ValueError(f"{graph.path}: no tensor of the file fills the zoo layer {missing[0]}")


__all__ = ["convert_deeplab_tflite", "input_normalisation", "read_class_names"]
