"""TF DeepLab's MobileNet checkpoints, written by TensorFlow with random values under TF-slim's variable names,
converted to zoo models: every tensor lands where it belongs.

The names below are written out from TF-slim's scopes (``MobilenetV2/expanded_conv_N/{expand,depthwise,project}``,
``squeeze_excite/Conv``, ``Conv_1``) and research/deeplab's head scopes, independently of the converter's tables.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import zoo
from zoo.convert import convert_deeplab_tf, list_pretrained
from zoo.convert import pretrained as pretrained_mod
from zoo.convert.pretrained import published
from zoo.encoders import build_encoder

tf = pytest.importorskip("tensorflow")
from tests.test_convert_deeplab_tf import write_checkpoint  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _bn(scope: str, chs: int) -> dict[str, tuple[int, ...]]:
    return {f"{scope}/BatchNorm/{v}": (chs,) for v in ("gamma", "beta", "moving_mean", "moving_variance")}


def backbone_shapes(scope: str, encoder: str, width: float) -> dict[str, tuple[int, ...]]:
    """TF-slim's variables of a MobileNet; the channel counts are the zoo encoder's (checked against torchvision
    and Google's graphs in tests/test_encoders_mobilenet.py)."""
    enc = build_encoder(encoder, width=width)
    stem = enc.stem.conv.out_channels
    shapes = {f"{scope}/Conv/weights": (3, 3, 3, stem), **_bn(f"{scope}/Conv", stem)}
    for i, block in enumerate(enc.blocks):
        unit = f"{scope}/expanded_conv" + (f"_{i}" if i else "")
        if block.expand is not None:
            conv = block.expand.conv
            shapes[f"{unit}/expand/weights"] = (*conv.kernel_size, conv.in_channels, conv.out_channels)
            shapes |= _bn(f"{unit}/expand", conv.out_channels)
        if block.depthwise is not None:
            conv = block.depthwise.conv
            shapes[f"{unit}/depthwise/depthwise_weights"] = (*conv.kernel_size, conv.in_channels, 1)
            shapes |= _bn(f"{unit}/depthwise", conv.in_channels)
        if block.se is not None:
            mid, squeeze = block.se.reduce.in_channels, block.se.reduce.out_channels
            shapes[f"{unit}/squeeze_excite/Conv/weights"] = (1, 1, mid, squeeze)
            shapes[f"{unit}/squeeze_excite/Conv/biases"] = (squeeze,)
            shapes[f"{unit}/squeeze_excite/Conv_1/weights"] = (1, 1, squeeze, mid)
            shapes[f"{unit}/squeeze_excite/Conv_1/biases"] = (mid,)
        conv = block.project.conv
        shapes[f"{unit}/project/weights"] = (1, 1, conv.in_channels, conv.out_channels)
        shapes |= _bn(f"{unit}/project", conv.out_channels)
    if enc.last is not None:
        conv = enc.last.conv
        shapes[f"{scope}/Conv_1/weights"] = (1, 1, conv.in_channels, conv.out_channels)
        shapes |= _bn(f"{scope}/Conv_1", conv.out_channels)
    return shapes


def aspp_head_shapes(chs: int, num_classes: int, depth: int = 256) -> dict[str, tuple[int, ...]]:
    """research/deeplab's MobileNetV2 head: aspp0, image pooling, the projection of both, the logits."""
    shapes = {"aspp0/weights": (1, 1, chs, depth), **_bn("aspp0", depth)}
    shapes |= {"image_pooling/weights": (1, 1, chs, depth), **_bn("image_pooling", depth)}
    shapes |= {"concat_projection/weights": (1, 1, 2 * depth, depth), **_bn("concat_projection", depth)}
    return shapes | {"logits/semantic/weights": (1, 1, depth, num_classes), "logits/semantic/biases": (num_classes,)}


def lraspp_head_shapes(chs: int, low_chs: int, num_classes: int) -> dict[str, tuple[int, ...]]:
    """research/deeplab's MobileNetV3 head (model_zoo.md's flags): aspp0 with BatchNorm, image pooling with biases
    and no BatchNorm (the squeeze-excite gate), the sum-merge decoder whose output is the logits."""
    shapes = {"aspp0/weights": (1, 1, chs, 128), **_bn("aspp0", 128)}
    shapes |= {"image_pooling/weights": (1, 1, chs, 128), "image_pooling/biases": (128,)}
    shapes |= {"decoder/feature_projection0/weights": (1, 1, low_chs, num_classes)}
    shapes |= {"decoder/feature_projection0/biases": (num_classes,)}
    return shapes | {"decoder/decoder_conv0/weights": (1, 1, 128, num_classes), "decoder/decoder_conv0/biases": (19,)}


def _every_tensor_landed(model, values: dict[str, np.ndarray]) -> None:
    """Each zoo tensor holds exactly the values of one TF variable (as multisets: layouts are transposed)."""
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    theirs = sorted(np.sort(v.ravel()).tobytes() for n, v in values.items() if n != "global_step")
    ours = sorted(np.sort(v.numpy().ravel()).tobytes() for v in state.values())
    assert len(ours) == len(theirs) and ours == theirs


@pytest.mark.parametrize("width", [0.5, 1.0])
def test_voc_mobilenetv2_converts_every_tensor(tmp_path, width):
    shapes = backbone_shapes("MobilenetV2", "mobilenetv2", width)
    shapes |= aspp_head_shapes(shapes["MobilenetV2/expanded_conv_16/project/weights"][-1], 21) | {"global_step": ()}
    values = write_checkpoint(tmp_path / "model.ckpt", shapes)
    model = convert_deeplab_tf(tmp_path / "model.ckpt")
    args = model.build_args
    assert (args["encoder"], args["decoder"], args["encoder_kwargs"]["width"]) == ("mobilenetv2", "deeplabv3", width)
    assert model.decoder.aspp.branches[0].conv.kernel_size == (1, 1) and len(model.decoder.aspp.branches) == 2
    assert model.class_names[15] == "person"
    _every_tensor_landed(model, values)
    state = model.state_dict()
    dw = values["MobilenetV2/expanded_conv_3/depthwise/depthwise_weights"]
    assert torch.equal(state["encoder.blocks.3.depthwise.conv.weight"], torch.from_numpy(dw.transpose(2, 3, 0, 1)))
    expand = values["MobilenetV2/expanded_conv_16/expand/weights"]
    assert torch.equal(state["encoder.blocks.16.expand.conv.weight"], torch.from_numpy(expand.transpose(3, 2, 0, 1)))
    projection = values["concat_projection/weights"][0, 0].T  # TF: [image pooling, aspp0]; the zoo: [aspp0, pool]
    np.testing.assert_array_equal(state["decoder.aspp.project.conv.weight"][:, :256, 0, 0], projection[:, 256:])
    with torch.no_grad():
        assert model(torch.rand(1, 3, 65, 65)).shape == (1, 21, 65, 65)


def test_ade20k_mobilenetv2_converts_with_the_deeplabv3plus_decoder(tmp_path):
    # model_zoo.md's mobilenetv2_ade20k_train: no atrous ASPP branches, the decoder at output stride 4 (separable
    # convs, research/deeplab's default) on layer_4/depthwise_output, 151 classes
    shapes = backbone_shapes("MobilenetV2", "mobilenetv2", 1.0) | aspp_head_shapes(320, 151)
    low = shapes["MobilenetV2/expanded_conv_2/depthwise/depthwise_weights"][2]
    shapes |= {"decoder/feature_projection0/weights": (1, 1, low, 48), **_bn("decoder/feature_projection0", 48)}
    for k, chs in enumerate((256 + 48, 256)):
        scope = f"decoder/decoder_conv{k}"
        shapes |= {f"{scope}_depthwise/depthwise_weights": (3, 3, chs, 1), **_bn(f"{scope}_depthwise", chs)}
        shapes |= {f"{scope}_pointwise/weights": (1, 1, chs, 256), **_bn(f"{scope}_pointwise", 256)}
    values = write_checkpoint(tmp_path / "model.ckpt", shapes)
    model = convert_deeplab_tf(tmp_path / "model.ckpt")
    assert (model.build_args["decoder"], len(model.decoder.aspp.branches), low) == ("deeplabv3plus", 2, 144)
    built = zoo.build_model(**dict(published("mobilenetv2_ade20k_train").build), decoder="deeplabv3plus",
                            encoder="mobilenetv2", num_classes=151, semantics="deeplab-tf")  # fmt: skip
    assert {k: v.shape for k, v in built.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert model.decoder.low_level.conv.in_channels == 144 and model.class_names[:2] == ["other", "wall"]
    _every_tensor_landed(model, values)
    dw = values["decoder/decoder_conv1_depthwise/depthwise_weights"]
    assert torch.equal(model.decoder.refine[1].depthwise.conv.weight, torch.from_numpy(dw.transpose(2, 3, 0, 1)))
    with torch.no_grad():
        assert model(torch.rand(1, 3, 65, 63)).shape == (1, 151, 65, 63)


@pytest.mark.parametrize("encoder, units", [("mobilenetv3_small", 11), ("mobilenetv3_large", 15)])
def test_cityscapes_mobilenetv3_converts_with_its_lraspp_head(tmp_path, encoder, units):
    enc = build_encoder(encoder, tap="depthwise")
    shapes = backbone_shapes("MobilenetV3", encoder, 1.0)
    shapes |= lraspp_head_shapes(enc.feature_info[-1].channels, enc.feature_info[2].channels, 19)
    values = write_checkpoint(tmp_path / "model.ckpt", shapes)
    model = convert_deeplab_tf(tmp_path / "model.ckpt", output_stride=32)
    assert len(model.encoder.blocks) == units and model.build_args["decoder"] == "lraspp"
    assert model.decoder.pool_size == (25, 25) and model.decoder.pool_stride == (4, 5)  # 769 at output stride 32
    assert model.class_names[0] == "road"
    _every_tensor_landed(model, values)
    se = values["MobilenetV3/expanded_conv_10/squeeze_excite/Conv_1/biases"]
    assert torch.equal(model.state_dict()["encoder.blocks.10.se.expand.bias"], torch.from_numpy(se))
    low = values["decoder/feature_projection0/weights"]
    assert torch.equal(model.decoder.low_classifier.weight, torch.from_numpy(low.transpose(3, 2, 0, 1)))


def test_mobilenet_misfits_name_the_variable(tmp_path):
    shapes = backbone_shapes("MobilenetV2", "mobilenetv2", 0.5) | aspp_head_shapes(160, 21)
    write_checkpoint(
        tmp_path / "extra.ckpt", shapes | {"MobilenetV2/expanded_conv_3/squeeze_excite/Conv/weights": (1, 1, 4, 4)}
    )
    with pytest.raises(ValueError, match="variable MobilenetV2/expanded_conv_3/squeeze_excite/Conv/weights fits no"):
        convert_deeplab_tf(tmp_path / "extra.ckpt")
    fewer = {k: v for k, v in shapes.items() if not k.startswith("MobilenetV2/expanded_conv_16/")}
    write_checkpoint(tmp_path / "fewer.ckpt", fewer)
    with pytest.raises(ValueError, match="MobilenetV2 with 16 expanded_conv units fits no TF DeepLab MobileNet"):
        convert_deeplab_tf(tmp_path / "fewer.ckpt")
    backbone = {k: v for k, v in shapes.items() if k.startswith("MobilenetV2/")}
    write_checkpoint(tmp_path / "backbone.ckpt", backbone)
    with pytest.raises(ValueError, match="backbone-only checkpoints are not converted"):
        convert_deeplab_tf(tmp_path / "backbone.ckpt")


@pytest.mark.parametrize(
    "name, encoder, width",
    [
        ("mobilenetv2_dm05_voc_trainaug", "mobilenetv2", 0.5),
        ("mobilenetv3_small_cityscapes_trainfine", "", 1.0),
        ("edgetpu_deeplab_slim_cityscapes", "mobilenet_edgetpu", 0.75),
    ],
)
def test_published_rows_build_the_converted_layout(tmp_path, monkeypatch, name, encoder, width):
    spec = published(name)
    assert name in list_pretrained() and spec.url.startswith("http://download.tensorflow.org/models/")
    if spec.decoder == "lraspp":
        enc = build_encoder(spec.encoder, tap="depthwise")
        shapes = backbone_shapes("MobilenetV3", spec.encoder, 1.0)
        shapes |= lraspp_head_shapes(enc.feature_info[-1].channels, enc.feature_info[2].channels, 19)
    elif encoder == "mobilenet_edgetpu":  # no published file size: only the conversion checks the download
        assert spec.size_mb is None and spec.result.startswith("70.0% (val, OS32")
        shapes = backbone_shapes("MobilenetEdgeTPU", encoder, width) | aspp_head_shapes(960, 19, depth=128)
    else:
        shapes = backbone_shapes("MobilenetV2", encoder, width) | aspp_head_shapes(160, 21)
    write_checkpoint(tmp_path / "model.ckpt", shapes)
    converted = convert_deeplab_tf(tmp_path / "model.ckpt", output_stride=spec.output_stride).state_dict()
    monkeypatch.setattr(pretrained_mod, "converted_state", lambda weights: converted)  # stands in for the download
    args, state = pretrained_mod.DeepLabTF().model_state(name)
    built = zoo.build_model(**{k: v for k, v in args.items() if k not in ("class_names", "palette")})
    built.load_state_dict(state)
    built = built.state_dict()
    assert {k: v.shape for k, v in built.items()} == {k: v.shape for k, v in converted.items()}
    model = zoo.build_model(weights=f"deeplab-tf:{name}", output_stride=spec.output_stride)  # the published route
    assert all(torch.equal(model.state_dict()[k], v) for k, v in converted.items())
    assert model.encoder.stem.conv.out_channels == converted["encoder.stem.conv.weight"].shape[0]


@pytest.mark.parametrize("width, channels", [(1.0, 256), (0.75, 128)])
def test_edgetpu_deeplab_converts_with_its_depth_multiplier_and_aspp_channels(tmp_path, width, channels):
    # model_zoo.md: EdgeTPU-DeepLab uses the MobileNetV2 flags with aspp_convs_filters=256; -slim: depth
    # multiplier 0.75 and 128
    shapes = backbone_shapes("MobilenetEdgeTPU", "mobilenet_edgetpu", width)
    last = shapes["MobilenetEdgeTPU/Conv_1/weights"][-1]
    assert shapes["MobilenetEdgeTPU/Conv/weights"][-1] == {1.0: 32, 0.75: 24}[width] and "expanded_conv" not in {
        k.split("/")[1] for k in shapes if k.endswith("expand/weights")
    }
    shapes |= {"aspp0/weights": (1, 1, last, channels), **_bn("aspp0", channels)}
    shapes |= {"image_pooling/weights": (1, 1, last, channels), **_bn("image_pooling", channels)}
    shapes |= {"concat_projection/weights": (1, 1, 2 * channels, channels), **_bn("concat_projection", channels)}
    shapes |= {"logits/semantic/weights": (1, 1, channels, 19), "logits/semantic/biases": (19,)}
    values = write_checkpoint(tmp_path / "model.ckpt", shapes)
    model = convert_deeplab_tf(tmp_path / "model.ckpt")
    assert model.build_args["encoder"] == "mobilenet_edgetpu" and model.build_args["encoder_kwargs"]["width"] == width
    _every_tensor_landed(model, values)
    fused = values["MobilenetEdgeTPU/expanded_conv_1/expand/weights"]  # the 3x3 stride-2 fused expansion
    assert fused.shape[:2] == (3, 3)
    assert torch.equal(model.encoder.blocks[1].expand.conv.weight, torch.from_numpy(fused.transpose(3, 2, 0, 1)))


def test_the_command_line_converts_mobilenetv3_at_output_stride_32(tmp_path):
    from zoo.cli import main

    enc = build_encoder("mobilenetv3_small", tap="depthwise")
    shapes = backbone_shapes("MobilenetV3", "mobilenetv3_small", 1.0)
    shapes |= lraspp_head_shapes(enc.feature_info[-1].channels, enc.feature_info[2].channels, 19)
    write_checkpoint(tmp_path / "model.ckpt", shapes)
    assert main(["convert", "deeplab-tf", str(tmp_path / "model.ckpt"), "--output", str(tmp_path / "m.pt"),
                 "--output-stride", "32"]) == 0  # fmt: skip
    model = zoo.load_model(tmp_path / "m.pt")
    assert model.build_args["output_stride"] == 32 and model.build_args["encoder"] == "mobilenetv3_small"
    with torch.no_grad():
        assert model(torch.rand(1, 3, 97, 129)).shape == (1, 19, 97, 129)


def test_rows_without_a_published_size_skip_only_the_size_check(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda url, dst, progress=True: open(dst, "wb").close())
    path = pretrained_mod.download(published("edgetpu_deeplab_cityscapes"))  # model_zoo.md gives no size
    assert path.name == "edgetpu-deeplab_2020_03_09.tar.gz" and path.stat().st_size == 0
    with pytest.raises(ValueError, match="model_zoo.md gives 5 MB"):
        pretrained_mod.download(published("mobilenetv3_small_cityscapes_trainfine"))
    with pytest.raises(ValueError, match="is not a complete tar archive"):  # the conversion is the check left
        convert_deeplab_tf(path)
