"""TF DeepLab checkpoints, written by TensorFlow in the official format, converted to zoo models.

The variable names below are written out from research/deeplab's scopes independently of the converter's
tables; the semantics of ``semantics="deeplab-tf"`` are checked against TensorFlow's own ops.
"""

from __future__ import annotations

import tarfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import zoo
from zoo.convert import convert_deeplab_tf, list_pretrained
from zoo.convert import pretrained as pretrained_mod
from zoo.decoders.dpc import CITYSCAPES_CELL
from zoo.layers import resize_to
from zoo.models import build_model

tf = pytest.importorskip("tensorflow")

pytestmark = pytest.mark.usefixtures("one_thread")

ENTRY = {"xception_41": [128, 256, 728], "xception_65": [128, 256, 728], "xception_71": [128, 256, 256, 728, 728]}
MIDDLE = {"xception_41": 8, "xception_65": 16, "xception_71": 16}


def _bn(scope: str, chs: int) -> dict[str, tuple[int, ...]]:
    names = ("gamma", "beta", "moving_mean", "moving_variance")
    return {f"{scope}/BatchNorm/{n}": (chs,) for n in names}


def _sep(scope: str, cin: int, cout: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{scope}_depthwise/depthwise_weights": (3, 3, cin, 1),
        **_bn(f"{scope}_depthwise", cin),
        f"{scope}_pointwise/weights": (1, 1, cin, cout),
        **_bn(f"{scope}_pointwise", cout),
    }


def _unit(scope: str, cin: int, depths: tuple[int, int, int], shortcut: bool) -> dict[str, tuple[int, ...]]:
    out, chs = {}, (cin, *depths)
    for i in range(3):
        out |= _sep(f"{scope}/xception_module/separable_conv{i + 1}", chs[i], chs[i + 1])
    if shortcut:
        out |= {f"{scope}/xception_module/shortcut/weights": (1, 1, cin, depths[-1])}
        out |= _bn(f"{scope}/xception_module/shortcut", depths[-1])
    return out


def backbone_shapes(scope: str) -> dict[str, tuple[int, ...]]:
    shapes = {f"{scope}/entry_flow/conv1_1/weights": (3, 3, 3, 32), **_bn(f"{scope}/entry_flow/conv1_1", 32)}
    shapes |= {f"{scope}/entry_flow/conv1_2/weights": (3, 3, 32, 64), **_bn(f"{scope}/entry_flow/conv1_2", 64)}
    cin = 64
    for i, d in enumerate(ENTRY[scope], 1):
        shapes |= _unit(f"{scope}/entry_flow/block{i}/unit_1", cin, (d, d, d), True)
        cin = d
    for i in range(1, MIDDLE[scope] + 1):
        shapes |= _unit(f"{scope}/middle_flow/block1/unit_{i}", 728, (728, 728, 728), False)
    shapes |= _unit(f"{scope}/exit_flow/block1/unit_1", 728, (728, 1024, 1024), True)
    shapes |= _unit(f"{scope}/exit_flow/block2/unit_1", 1024, (1536, 1536, 2048), False)
    return shapes


def head_shapes(head: str, num_classes: int) -> dict[str, tuple[int, ...]]:
    if head == "aspp":
        shapes = {"aspp0/weights": (1, 1, 2048, 256), **_bn("aspp0", 256)}
        for k in (1, 2, 3):
            shapes |= _sep(f"aspp{k}", 2048, 256)
        shapes |= {"image_pooling/weights": (1, 1, 2048, 256), **_bn("image_pooling", 256)}
        shapes |= {"concat_projection/weights": (1, 1, 1280, 256), **_bn("concat_projection", 256)}
    else:
        shapes = {}
        for k, branch in enumerate(CITYSCAPES_CELL):
            shapes |= _sep(f"meta_architecture/branch{k}", 2048 if branch.source < 0 else 256, 256)
        shapes |= {"meta_architecture/concat_projection/weights": (1, 1, 1280, 256)}
        shapes |= _bn("meta_architecture/concat_projection", 256)
    shapes |= {"decoder/feature_projection0/weights": (1, 1, 256, 48), **_bn("decoder/feature_projection0", 48)}
    shapes |= _sep("decoder/decoder_conv0", 304, 256) | _sep("decoder/decoder_conv1", 256, 256)
    shapes |= {"logits/semantic/weights": (1, 1, 256, num_classes), "logits/semantic/biases": (num_classes,)}
    return shapes


def write_checkpoint(prefix, shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
    """Random values (variances positive) saved with TensorFlow's own V2 checkpoint writer."""
    rng = np.random.default_rng(seed)
    values = {}
    for name, shape in shapes.items():
        v = rng.standard_normal(shape, dtype=np.float32) * 0.1
        values[name] = np.abs(v) + 0.5 if name.endswith("moving_variance") else v
    names = sorted(values)
    tf.raw_ops.SaveV2(
        prefix=str(prefix),
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[tf.constant(values[n]) for n in names],
    )
    return values


@pytest.fixture(scope="module")
def voc_ckpt(tmp_path_factory):
    folder = tmp_path_factory.mktemp("x65_voc")
    shapes = backbone_shapes("xception_65") | head_shapes("aspp", 21)
    shapes |= {"global_step": (), "aspp0/weights/Momentum": (1, 1, 2048, 256)}  # a training checkpoint's extras
    values = write_checkpoint(folder / "model.ckpt", shapes)
    return folder, values


def test_x65_aspp_decoder_converts_exactly(voc_ckpt):
    folder, values = voc_ckpt
    model = convert_deeplab_tf(folder / "model.ckpt")
    assert model.build_args["encoder"] == "xception65" and model.build_args["decoder"] == "deeplabv3plus"
    assert model.build_args["semantics"] == "deeplab-tf" and model.num_classes == 21
    assert model.class_names[15] == "person" and model.palette[1] == [128, 0, 0]
    state = model.state_dict()
    stem = values["xception_65/entry_flow/conv1_1/weights"]
    assert torch.equal(state["encoder.stem.conv1.weight"], torch.from_numpy(stem.transpose(3, 2, 0, 1)))
    dw = values["xception_65/middle_flow/block1/unit_16/xception_module/separable_conv3_depthwise/depthwise_weights"]
    assert torch.equal(state["encoder.blocks.18.convs.2.conv_dw.weight"], torch.from_numpy(dw.transpose(2, 3, 0, 1)))
    var = values["xception_65/exit_flow/block1/unit_1/xception_module/shortcut/BatchNorm/moving_variance"]
    assert torch.equal(state["encoder.blocks.19.shortcut.bn.running_var"], torch.from_numpy(var))
    # TF concatenates [image pooling, aspp0..3]; the zoo [aspp0..3, image pooling]
    projection = values["concat_projection/weights"][0, 0].T  # out, in
    zoo_projection = state["decoder.aspp.project.conv.weight"][:, :, 0, 0].numpy()
    np.testing.assert_array_equal(zoo_projection[:, 1024:], projection[:, :256])
    np.testing.assert_array_equal(zoo_projection[:, :1024], projection[:, 256:])
    np.testing.assert_array_equal(state["decoder.classifier.bias"].numpy(), values["logits/semantic/biases"])


def test_converted_model_saves_and_loads_with_its_semantics(voc_ckpt, tmp_path):
    folder, _ = voc_ckpt
    model = convert_deeplab_tf(folder, output_stride=8)  # a folder holding the checkpoint
    zoo.save_model(model, tmp_path / "x65.pt")
    loaded = zoo.load_model(tmp_path / "x65.pt")
    assert loaded.semantics == "deeplab-tf" and loaded.encoder.output_stride == 8
    assert loaded.class_names == model.class_names
    x = torch.randn(1, 3, 33, 45)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_official_tarball_converts(voc_ckpt, tmp_path):
    folder, _ = voc_ckpt
    archive = tmp_path / "deeplabv3_pascal_train_aug_2018_01_04.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=0) as tar:
        for path in folder.iterdir():
            tar.add(path, arcname=f"deeplabv3_pascal_train_aug/{path.name}")
    assert convert_deeplab_tf(archive).num_classes == 21


def test_x71_dpc_converts_and_x41_backbone_alone(tmp_path):
    write_checkpoint(tmp_path / "x71", backbone_shapes("xception_71") | head_shapes("dpc", 19))
    model = convert_deeplab_tf(tmp_path / "x71")
    assert (model.build_args["encoder"], model.build_args["decoder"], model.num_classes) == ("xception71", "dpc", 19)
    assert model.class_names[0] == "road"
    # an ImageNet checkpoint: backbone + its 1001-class classifier, which is dropped
    shapes = backbone_shapes("xception_41") | {"xception_41/logits/weights": (1, 1, 2048, 1001)}
    values = write_checkpoint(tmp_path / "x41", shapes)
    model = convert_deeplab_tf(tmp_path / "x41", num_classes=5)
    assert model.build_args["encoder"] == "xception41" and model.num_classes == 5 and model.class_names is None
    w = values["xception_41/exit_flow/block2/unit_1/xception_module/separable_conv3_pointwise/weights"]
    assert torch.equal(model.encoder.blocks[-1].convs[2].conv_pw.weight, torch.from_numpy(w.transpose(3, 2, 0, 1)))


def test_misfits_name_the_first_variable(tmp_path):
    base = backbone_shapes("xception_41")
    bad = dict(base)
    bad["xception_41/entry_flow/block2/unit_1/xception_module/separable_conv1_pointwise/weights"] = (1, 1, 128, 255)
    write_checkpoint(tmp_path / "shape", bad)
    with pytest.raises(ValueError, match=r"separable_conv1_pointwise/weights has shape \[1, 1, 128, 255\]"):
        convert_deeplab_tf(tmp_path / "shape")
    extra = base | _unit("xception_41/middle_flow/block1/unit_9", 728, (728, 728, 728), False)
    write_checkpoint(tmp_path / "units", extra)
    with pytest.raises(ValueError, match="first variable that does not fit: xception_41/middle_flow/block1/unit_9/"):
        convert_deeplab_tf(tmp_path / "units")
    missing = {k: v for k, v in base.items() if "conv1_2/BatchNorm/gamma" not in k}
    write_checkpoint(tmp_path / "missing", missing)
    with pytest.raises(ValueError, match="variable xception_41/entry_flow/conv1_2/BatchNorm/gamma is missing"):
        convert_deeplab_tf(tmp_path / "missing")
    write_checkpoint(tmp_path / "resnet", {"resnet_v1_101/conv1/weights": (7, 7, 3, 64)})
    with pytest.raises(ValueError, match="no single xception_41/65/71 backbone.*first variable: resnet_v1_101/conv1"):
        convert_deeplab_tf(tmp_path / "resnet")
    stray = base | {"aspp9/weights": (1, 1, 2048, 256)}
    write_checkpoint(tmp_path / "stray", stray)
    with pytest.raises(ValueError, match="variable aspp9/weights fits no part of the detected xception41"):
        convert_deeplab_tf(tmp_path / "stray")
    with pytest.raises(FileNotFoundError, match="no TF checkpoint at"):
        convert_deeplab_tf(tmp_path / "nothing")


# --- the semantics, against TensorFlow's own ops -------------------------------------------------------------------


@pytest.mark.parametrize("size", [(129, 129), (256, 384), (257, 385)])
def test_align_corners_resize_is_tfs(size):
    x = torch.randn(1, 4, (size[0] - 1) // 16 + 1, (size[1] - 1) // 16 + 1)
    target = torch.empty(1, 1, (size[0] - 1) // 4 + 1, (size[1] - 1) // 4 + 1)
    ours = resize_to(x, target, align_corners=True)
    theirs = tf.compat.v1.image.resize_bilinear(x.permute(0, 2, 3, 1).numpy(), target.shape[-2:], align_corners=True)
    torch.testing.assert_close(ours, torch.from_numpy(theirs.numpy()).permute(0, 3, 1, 2), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("output_stride", [8, 16])
def test_no_padding_gives_tfs_grids(output_stride):
    tiny = {"width": 0.125}  # the grids do not depend on the widths
    model = build_model("xception65", "deeplabv3plus", 3, output_stride, encoder_kwargs=tiny, semantics="deeplab-tf")
    model.eval()
    for h, w in [(129, 129), (257, 385), (256, 384)]:
        with torch.no_grad():
            features = model.encoder(torch.zeros(1, 3, h, w))
        grids = {f.shape[-2:] for f in features}
        assert (torch.Size(((h - 1) // output_stride + 1, (w - 1) // output_stride + 1))) in grids
        assert features[model.decoder.low_index].shape[-2:] == ((h - 1) // 4 + 1, (w - 1) // 4 + 1)
    zoo_model = build_model("xception65", "deeplabv3plus", 3, output_stride, encoder_kwargs=tiny)
    assert "semantics" not in zoo_model.build_args and zoo_model.semantics == "zoo"


def test_preprocessing_and_epsilons_are_tfs():
    model = build_model("xception71", "dpc", 19, 16, semantics="deeplab-tf")
    pixels = np.arange(256, dtype=np.float32)
    normalised = (pixels / 255 - model.mean[0]) / model.std[0]
    np.testing.assert_allclose(normalised, pixels * (2 / 255) - 1, atol=1e-6)
    assert {m.eps for m in model.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {1e-3}
    assert {m.eps for m in model.decoder.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {1e-5}


def test_decoder_tap_is_before_the_relu():
    torch.manual_seed(0)
    raw = build_model("xception41", "deeplabv3plus", 3, semantics="deeplab-tf").eval()
    plain = build_model("xception41", "deeplabv3plus", 3).eval()
    plain.load_state_dict(raw.state_dict())
    with torch.no_grad():
        x = torch.randn(1, 3, 65, 65)
        tap_raw = raw.encoder(x)[raw.decoder.low_index]
        tap_plain = plain.encoder(x)[plain.decoder.low_index]
    assert (tap_raw < 0).any() and torch.equal(tap_plain, torch.relu(tap_raw))


def test_stem_and_anisotropic_atrous_depthwise_match_tf_ops():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 33, 46)
    w = torch.randn(3, 3, 3, 32)  # HWIO
    ours = F.conv2d(x, w.permute(3, 2, 0, 1), stride=2, padding=1)
    padded = tf.pad(x.permute(0, 2, 3, 1).numpy(), [[0, 0], [1, 1], [1, 1], [0, 0]])  # TF's conv2d_same, stride 2
    theirs = tf.nn.conv2d(padded, w.numpy(), 2, "VALID").numpy()
    torch.testing.assert_close(ours, torch.from_numpy(theirs).permute(0, 3, 1, 2), rtol=1e-4, atol=1e-4)
    cell = build_model("xception71", "dpc", 19, 8, semantics="deeplab-tf").decoder.dpc
    conv = cell.branches[4].depthwise.conv  # rates (6, 21), doubled at output stride 8
    assert conv.dilation == (12, 42)
    feats = torch.randn(1, 256, 17, 49)  # branch 4 reads branch 0
    kernel = conv.weight.detach().permute(2, 3, 0, 1).numpy()  # C, 1, H, W -> H, W, C, 1
    theirs = tf.nn.depthwise_conv2d(feats.permute(0, 2, 3, 1).numpy(), kernel, [1, 1, 1, 1], "SAME", dilations=(12, 42))
    with torch.no_grad():
        torch.testing.assert_close(
            conv(feats), torch.from_numpy(theirs.numpy()).permute(0, 3, 1, 2), rtol=1e-4, atol=1e-4
        )


# --- published names: the cache and the offline error, never the network ------------------------------------------


def test_pretrained_names_download_once_and_fail_offline(voc_ckpt, tmp_path, monkeypatch):
    assert "xception65_voc_trainaug" in list_pretrained() and "xception71_imagenet" in list_pretrained()
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(url, dst, progress=True):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    model = pretrained_mod.published("deeplab-tf:xception65_voc_trainaug")
    with pytest.raises(ConnectionError) as error:
        pretrained_mod.converted_state("deeplab-tf:xception65_voc_trainaug")
    assert str(error.value) == (
        f"could not download {model.url} (OSError: network is unreachable); offline, download it elsewhere and put "
        f"it at {tmp_path / 'hub' / 'deeplab_tf' / model.file}"
    )
    with pytest.raises(KeyError, match="unknown TF DeepLab model 'nope'"):
        pretrained_mod.published("deeplab-tf:nope")
    folder, _ = voc_ckpt
    archive = tmp_path / "x.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=0) as tar:
        for path in folder.iterdir():
            tar.add(path, arcname=path.name)
    calls = []

    def local(url, dst, progress=True):  # stands in for the download: the test tarball
        calls.append(url)
        data = archive.read_bytes()
        with open(dst, "wb") as f:
            f.write(data)

    monkeypatch.setattr(torch.hub, "download_url_to_file", local)
    monkeypatch.setattr(pretrained_mod, "SIZE_TOLERANCE", 1e9)  # the test tarball is not 439 MB
    state = pretrained_mod.converted_state("deeplab-tf:xception65_voc_trainaug")
    again = pretrained_mod.converted_state("deeplab-tf:xception65_voc_trainaug")
    assert len(calls) == 1 and torch.equal(state["decoder.classifier.bias"], again["decoder.classifier.bias"])
    model = zoo.build_model(weights="deeplab-tf:xception65_voc_trainaug", output_stride=8)
    assert model.semantics == "deeplab-tf" and model.encoder.output_stride == 8 and model.class_names[0] == "background"
    assert torch.equal(model.state_dict()["encoder.stem.conv1.weight"], state["encoder.stem.conv1.weight"])
    with pytest.raises(ValueError, match="is xception65 \\+ deeplabv3plus, 21 classes; num_classes=19"):
        zoo.build_model(num_classes=19, weights="deeplab-tf:xception65_voc_trainaug")
    backbone = {k: v for k, v in state.items() if k.startswith("encoder.")}
    torch.save(backbone, tmp_path / "hub" / "deeplab_tf" / "xception65_imagenet.pt")  # as if converted before
    model = zoo.build_model(encoder_weights="deeplab-tf:xception65_imagenet")
    assert torch.equal(model.encoder.stem.conv1.weight, state["encoder.stem.conv1.weight"])
    monkeypatch.setattr(pretrained_mod, "SIZE_TOLERANCE", 0.05)
    (tmp_path / "hub" / "deeplab_tf" / "xception65_voc_trainaug.pt").unlink()
    with pytest.raises(ValueError, match="model_zoo.md gives 439 MB"):
        pretrained_mod.converted_state("deeplab-tf:xception65_voc_trainaug")


def test_zoo_convert_command(voc_ckpt, tmp_path, capsys):
    from zoo.cli import main

    folder, _ = voc_ckpt
    out = tmp_path / "models" / "x65_voc.pt"
    assert (
        main(["convert", "deeplab-tf", str(folder / "model.ckpt"), "--output", str(out), "--output-stride", "8"]) == 0
    )
    assert "xception65 + deeplabv3plus, 21 classes, output stride 8" in capsys.readouterr().out
    model = zoo.load_model(out)
    assert model.semantics == "deeplab-tf" and model.build_args["output_stride"] == 8
    assert main(["convert", "deeplab-tf", str(folder), "--output", str(out)]) == 2
    assert f"zoo convert: error: {out} exists; pass --force" in capsys.readouterr().err
    assert main(["convert", "deeplab-tf", str(tmp_path / "none"), "--output", str(tmp_path / "y.pt")]) == 2
    assert "zoo convert: error: no TF checkpoint at" in capsys.readouterr().err
    assert not (tmp_path / "y.pt").exists()
