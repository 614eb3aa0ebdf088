"""TF DeepLab's MobileNet checkpoints (model_zoo.md: VOC MobileNetV2 at depth multipliers 1.0 and 0.5, Cityscapes
MobileNetV2, MobileNetV3 large/small and EdgeTPU-DeepLab at 1.0 and 0.75) as zoo models.

The variant comes from the variable names and shapes: the backbone scope (``MobilenetV2``, ``MobilenetV3``,
``MobilenetEdgeTPU``), the stem's channels (the depth multiplier), ``aspp0``'s channels, the number of
``expanded_conv`` units (15: large, 11: small) and the head: ``aspp0`` + ``image_pooling`` +
``concat_projection`` + ``logits/semantic`` (the MobileNetV2 and EdgeTPU-DeepLab configurations:
:class:`zoo.decoders.deeplabv3.DeepLabV3Decoder` without atrous branches and without its 3x3 conv), or ``aspp0`` +
``image_pooling`` with biases + ``decoder/feature_projection0`` + ``decoder/decoder_conv0`` (the MobileNetV3
configurations: :class:`zoo.decoders.lraspp.LRASPPDecoder` with model_zoo.md's image pooling, a 769-pixel crop's
window at stride (4, 5)), or the first with ``decoder/feature_projection0`` and the separable
``decoder/decoder_conv{0,1}`` (the ADE20K MobileNetV2 model: :class:`zoo.decoders.deeplabv3plus.DeepLabV3PlusDecoder`
without atrous branches, reading ``layer_4/depthwise_output``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from zoo.convert.tf_rows import (
    Row,
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
from zoo.encoders.mobilenet import MobileNet
from zoo.encoders.mobilenet_specs import SPECS, unit_name
from zoo.models import SegmentationModel, build_model

if TYPE_CHECKING:
    from zoo.convert.deeplab_tf import Checkpoint

# backbone scope -> {number of expanded_conv units: zoo encoder}
MOBILENET_SCOPES = {
    "MobilenetV2": {17: "mobilenetv2"},
    "MobilenetV3": {15: "mobilenetv3_large", 11: "mobilenetv3_small"},
    "MobilenetEdgeTPU": {22: "mobilenet_edgetpu"},
}
HEAD_SCOPES = ("aspp0/", "image_pooling/", "concat_projection/", "decoder/", "logits/")
POOLING_CROP = 769  # model_zoo.md's --image_pooling_crop_size for the MobileNetV3 models
POOLING_STRIDE = (4, 5)  # model_zoo.md's --image_pooling_stride


@dataclass(frozen=True)
class MobileNetVariant:
    """What a TF DeepLab MobileNet checkpoint holds.

    Args:
        scope: the backbone's variable scope.
        encoder: the zoo encoder.
        width: the depth multiplier.
        decoder: the zoo decoder ("deeplabv3" for ASPP without atrous branches, "deeplabv3plus" for that ASPP
            with the DeepLabV3+ decoder, "lraspp").
        num_classes: the classes of the logits.
        channels: channels of ``aspp0`` (model_zoo.md: 256, 128 for MobileNetV3 and EdgeTPU-DeepLab-slim).
    """

    scope: str
    encoder: str
    width: float
    decoder: str
    num_classes: int
    channels: int

    def describe(self) -> str:
        return f"{self.encoder} (depth multiplier {self.width:g}) + {self.decoder}, {self.num_classes} classes"


def is_mobilenet(shapes: dict[str, tuple[int, ...]]) -> bool:
    """Whether the checkpoint has a MobileNet backbone of TF DeepLab."""
    return any(f"{scope}/Conv/weights" in shapes for scope in MOBILENET_SCOPES)


def detect_mobilenet(ckpt: Checkpoint) -> MobileNetVariant:
    """Read the variant from the variable names and shapes.

    Raises:
        ValueError: a unit count or head that fits no published configuration (the message names a variable).
    """
    shapes = ckpt.shapes
    scope = next(s for s in MOBILENET_SCOPES if f"{s}/Conv/weights" in shapes)
    units = {n.split("/")[1] for n in shapes if n.startswith(f"{scope}/expanded_conv")}
    if len(units) not in MOBILENET_SCOPES[scope]:
        raise ValueError(
            f"{ckpt.source}: {scope} with {len(units)} expanded_conv units fits no TF DeepLab MobileNet "
            f"(it has {sorted(MOBILENET_SCOPES[scope])}); first variable: {scope}/{sorted(units)[-1]}"
        )
    encoder = MOBILENET_SCOPES[scope][len(units)]
    width = shapes[f"{scope}/Conv/weights"][-1] / SPECS[encoder].stem_chs
    if "decoder/decoder_conv0/weights" in shapes:
        decoder, classes = "lraspp", shapes["decoder/decoder_conv0/weights"][-1]
    elif "logits/semantic/weights" in shapes and "concat_projection/weights" in shapes:
        plus = "decoder/feature_projection0/weights" in shapes
        decoder, classes = "deeplabv3plus" if plus else "deeplabv3", shapes["logits/semantic/weights"][-1]
    else:
        raise ValueError(
            f"{ckpt.source}: no head of TF DeepLab's MobileNet configurations (logits/semantic/weights with "
            "concat_projection/weights, or decoder/decoder_conv0/weights): backbone-only checkpoints are not converted"
        )
    channels = shapes["aspp0/weights"][-1] if "aspp0/weights" in shapes else 0
    return MobileNetVariant(scope, encoder, width, decoder, int(classes), int(channels))


def mobilenet_table(encoder: MobileNet, scope: str, prefix: str = "encoder.") -> list[Row]:
    """(zoo key, TF variable, transform) for every tensor of ``encoder`` (rows of convs it lacks are skipped)."""
    rows = _conv_bn(f"{prefix}stem", f"{scope}/Conv")
    for i in range(len(encoder.blocks)):
        zoo, tf = f"{prefix}blocks.{i}", f"{scope}/{unit_name(i)}"
        rows += _conv_bn(f"{zoo}.expand", f"{tf}/expand")
        rows += [(f"{zoo}.depthwise.conv.weight", f"{tf}/depthwise/depthwise_weights", _depthwise)]
        rows += _bn(f"{zoo}.depthwise.bn", f"{tf}/depthwise")
        for ours, theirs in (("reduce", "Conv"), ("expand", "Conv_1")):
            rows += [(f"{zoo}.se.{ours}.weight", f"{tf}/squeeze_excite/{theirs}/weights", _conv)]
            rows += [(f"{zoo}.se.{ours}.bias", f"{tf}/squeeze_excite/{theirs}/biases", _vector)]
        rows += _conv_bn(f"{zoo}.project", f"{tf}/project")
    return rows + _conv_bn(f"{prefix}last", f"{scope}/Conv_1")


def head_rows(decoder: str) -> list[Row]:
    """(zoo key, TF variable, transform) for the head and the logits."""
    d = "decoder."
    if decoder in ("deeplabv3", "deeplabv3plus"):
        rows = _conv_bn(f"{d}aspp.branches.0", "aspp0") + _conv_bn(f"{d}aspp.branches.1.conv", "image_pooling")
        rows += [(f"{d}aspp.project.conv.weight", "concat_projection/weights", lambda w: _pool_last(w, 2))]
        rows += _bn(f"{d}aspp.project.bn", "concat_projection")
        if decoder == "deeplabv3plus":
            rows += _conv_bn(f"{d}low_level", "decoder/feature_projection0")
            rows += [x for k in range(2) for x in _separable(f"{d}refine.{k}", f"decoder/decoder_conv{k}")]
        pairs = (("classifier", "logits/semantic"),)
    else:
        rows = _conv_bn(f"{d}conv", "aspp0")
        pairs = (
            ("pool_conv", "image_pooling"),
            ("low_classifier", "decoder/feature_projection0"),
            ("classifier", "decoder/decoder_conv0"),
        )
    for ours, theirs in pairs:
        rows += [(f"{d}{ours}.weight", f"{theirs}/weights", _conv), (f"{d}{ours}.bias", f"{theirs}/biases", _vector)]
    return rows


def build_for(variant: MobileNetVariant, output_stride: int) -> SegmentationModel:
    """The zoo model of ``variant`` (``semantics="deeplab-tf"``), randomly initialised."""
    kwargs: dict = {"atrous_rates": [], "conv3x3": False, "channels": variant.channels}
    if variant.decoder == "deeplabv3plus":
        kwargs = {"atrous_rates": [], "aspp_channels": variant.channels}
    if variant.decoder == "lraspp":
        window = int((POOLING_CROP - 1) / output_stride + 1)  # TF DeepLab's scale_dimension
        kwargs = {"pool_size": (window, window), "pool_stride": POOLING_STRIDE, "channels": variant.channels}
    return build_model(
        variant.encoder,
        variant.decoder,
        variant.num_classes,
        output_stride,
        encoder_kwargs={"width": variant.width},
        semantics="deeplab-tf",
        **kwargs,
    )


def mobilenet_model(ckpt: Checkpoint, output_stride: int) -> tuple[SegmentationModel, MobileNetVariant]:
    """The checkpoint's model with every tensor filled; every variable of the backbone and head is used.

    Raises:
        ValueError: naming the first variable that is missing, misshapen or fits nothing.
    """
    variant = detect_mobilenet(ckpt)
    model = build_for(variant, output_stride)
    table = mobilenet_table(model.encoder, variant.scope) + head_rows(variant.decoder)
    state, used = fill(model.state_dict(), table, ckpt)
    for name in _model_variables(ckpt.shapes):
        if name.startswith((f"{variant.scope}/", *HEAD_SCOPES)) and name not in used:
            raise ValueError(f"{ckpt.source}: variable {name} fits no part of the detected {variant.describe()}")
    model.load_state_dict(state)
    return model, variant
