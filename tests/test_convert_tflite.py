"""Google's TFLite DeepLab models (tests/data/real_models) converted to zoo models and checked against LiteRT's
interpreter on genuine VOC photographs (../shared/data/voc_sample; skipped where that folder is absent)."""

from __future__ import annotations

import copy
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from zoo.checkpoint import load_model
from zoo.cli import main
from zoo.convert import tflite as tflite_mod
from zoo.convert.tflite import convert_deeplab_tflite, read_class_names
from zoo.convert.tflite_file import dequantize, read_tflite
from zoo.metrics import scores_from_confusion

litert = pytest.importorskip("ai_edge_litert.interpreter")

pytestmark = pytest.mark.usefixtures("one_thread")

MODELS = Path(__file__).parent / "data" / "real_models"
FLOAT = MODELS / "deeplabv3_257_mv_gpu.tflite"
QUANT = MODELS / "deeplabv3_mnv2_dm05_pascal_quant.tflite"
LABELS = MODELS / "pascal_voc_segmentation_labels.txt"
VOC = Path(__file__).resolve().parents[2] / "shared" / "data" / "voc_sample"
IDS = ("2011_000003", "2011_000006", "2011_000025")
needs_voc = pytest.mark.skipif(
    not (VOC / "JPEGImages").is_dir(), reason=f"the genuine VOC photographs are not at {VOC} (../shared/data)"
)


@pytest.fixture(scope="module")
def converted() -> dict[Path, zoo.SegmentationModel]:
    return {path: convert_deeplab_tflite(path) for path in (FLOAT, QUANT)}


def interpreter(path: Path):
    it = litert.Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    return it


def run_tflite(it, image: np.ndarray) -> np.ndarray:
    """The interpreter's output for an HxWx3 uint8 image (float models take it in [-1, 1])."""
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    x = image[None] if inp["dtype"] == np.uint8 else (image[None].astype(np.float32) / 127.5 - 1)
    it.set_tensor(inp["index"], x)
    it.invoke()
    return it.get_tensor(out["index"])[0]


def run_zoo(model, image: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255)[0]


def letterbox(path: Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The photo with its longer side resized to ``size``, padded with 128 at the bottom and right to size x size."""
    image = Image.open(path).convert("RGB")
    scale = size / max(image.size)
    w, h = round(image.width * scale), round(image.height * scale)
    canvas = np.full((size, size, 3), 128, np.uint8)
    canvas[:h, :w] = np.asarray(image.resize((w, h), Image.BILINEAR))
    return canvas, (h, w)


def to_original(mask: np.ndarray, hw: tuple[int, int], shape: tuple[int, int]) -> torch.Tensor:
    cropped = Image.fromarray(mask[: hw[0], : hw[1]].astype(np.uint8))
    return torch.from_numpy(np.asarray(cropped.resize(shape[::-1], Image.NEAREST))).long()


def confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int = 21) -> torch.Tensor:
    keep = target != 255
    return torch.bincount(target[keep] * num_classes + pred[keep], minlength=num_classes**2).view(num_classes, -1)


# ---------------------------------------------------------------- conversion


def test_both_models_convert_to_mobilenetv2_deeplabv3(converted):
    float_model, quant_model = converted[FLOAT], converted[QUANT]
    for model, stride in ((float_model, 8), (quant_model, 16)):
        assert model.build_args["encoder"] == "mobilenetv2" and model.build_args["encoder_kwargs"] == {"width": 0.5}
        assert model.build_args["output_stride"] == stride and model.semantics == "deeplab-tf"
        assert model.build_args["atrous_rates"] == [] and model.build_args["conv3x3"] is False
        assert len(model.decoder.aspp.branches) == 2 and isinstance(model.decoder.conv, torch.nn.Identity)
        assert model.class_names[0] == "background" and model.class_names[15] == "person" and len(model.palette) == 21
    assert float_model.mean == float_model.std == (0.5,) * 3  # float input in [-1, 1]
    assert quant_model.mean == quant_model.std == (128 / 255,) * 3  # uint8, scale 1/128, zero point 128
    # every conv of the float file, as stored, is a parameter of the zoo model (BatchNorm folded into biases)
    graph = read_tflite(FLOAT)
    stem = graph.tensors[graph.ops[0].inputs[1]].values
    assert torch.equal(float_model.encoder.stem.conv.weight, torch.from_numpy(stem.transpose(0, 3, 1, 2)))


def test_dequantize_per_tensor_and_per_channel():
    q = np.array([[0, 128], [255, 130]], np.uint8)
    assert np.allclose(dequantize(q, np.array([0.5]), np.array([128]), 0), [[-64, 0], [63.5, 1]])
    per_channel = dequantize(q, np.array([1.0, 0.25]), np.array([0, 128]), 0)
    assert np.allclose(per_channel, [[0, 128], [31.75, 0.5]])
    graph = read_tflite(QUANT)  # the first conv's weights: uint8, zero point 117, one scale
    weights = graph.tensors[graph.ops[0].inputs[1]]
    assert weights.dtype == np.uint8 and weights.zero_point.tolist() == [117] and weights.values.dtype == np.float32


def test_class_names_file_and_list():
    assert read_class_names(LABELS, 21)[-1] == "tvmonitor"  # the comment after the blank line is not a name
    model = convert_deeplab_tflite(FLOAT, class_names=[f"c{i}" for i in range(21)])
    assert model.class_names[3] == "c3" and len(model.palette) == 21
    with pytest.raises(ValueError, match=r"names 21 classes; the model predicts 19"):
        read_class_names(LABELS, 19)


def test_unmappable_files_and_ops_are_named(tmp_path, monkeypatch):
    not_tflite = tmp_path / "model.tflite"
    not_tflite.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match=rf"^{not_tflite} is not a TFLite model"):
        convert_deeplab_tflite(not_tflite)
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(FLOAT.read_bytes()[:100_000])
    with pytest.raises(ValueError, match=rf"^{truncated} is not a complete TFLite model"):
        convert_deeplab_tflite(truncated)
    original = read_tflite(FLOAT)

    def altered(change):
        graph = copy.deepcopy(original)
        change(graph)
        monkeypatch.setattr(tflite_mod, "read_tflite", lambda path: graph)
        return graph

    altered(lambda g: setattr(g.ops[61], "kind", "SOFTMAX"))
    with pytest.raises(ValueError, match=r"op 61 SOFTMAX \(output 'AvgPool2D/AvgPool'\) has no zoo counterpart"):
        convert_deeplab_tflite(FLOAT)
    altered(lambda g: g.ops[69].options.update(AlignCorners=False, HalfPixelCenters=True))
    with pytest.raises(ValueError, match=r"'ResizeBilinear_3'\) resizes with align_corners=False"):
        convert_deeplab_tflite(FLOAT)
    altered(lambda g: setattr(g.tensors[g.ops[3].inputs[1]], "name", "MobilenetV2/expanded_conv_1/squeeze/weights"))
    with pytest.raises(ValueError, match=r"tensor 'MobilenetV2/expanded_conv_1/squeeze/weights' maps to no zoo layer"):
        convert_deeplab_tflite(FLOAT)
    altered(lambda g: g.ops[25].options.update(DilationHFactor=1, DilationWFactor=1))
    with pytest.raises(ValueError, match=r"op 25 DEPTHWISE_CONV_2D .* has stride/dilation \(1, 1, 1, 1\)"):
        convert_deeplab_tflite(FLOAT)


def test_cli_writes_a_model_that_loads(tmp_path, capsys):
    out = tmp_path / "voc.pt"
    assert main(["convert", "deeplab-tflite", str(QUANT), "--output", str(out), "--class-names", str(LABELS)]) == 0
    assert "mobilenetv2 + deeplabv3, 21 classes, output stride 16" in capsys.readouterr().out
    model, reference = load_model(out).eval(), convert_deeplab_tflite(QUANT)
    x = torch.rand(1, 3, 65, 63)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    assert model.class_names == reference.class_names and model.mean == reference.mean
    assert main(["convert", "deeplab-tflite", str(QUANT), "--output", str(out)]) == 2
    assert capsys.readouterr().err.strip() == f"zoo convert: error: {out} exists; pass --force to overwrite it"


def test_demo_draws_the_converted_model_on_grace_hopper(tmp_path):
    from zoo.cli.demo import real_model_overlay

    line = real_model_overlay(tmp_path)
    assert line.endswith(str(tmp_path / "real_model" / "grace_hopper.png"))
    strip = np.asarray(Image.open(tmp_path / "real_model" / "grace_hopper.png"))
    photo = np.asarray(Image.open(MODELS / "grace_hopper.png"))
    assert strip.shape[1] == 2 * photo.shape[1] and strip.shape[0] > photo.shape[0]  # photo | prediction, legend
    prediction = convert_deeplab_tflite(QUANT)
    mask = run_zoo(prediction, photo).argmax(0)
    assert (mask == 15).float().mean() > 0.5  # VOC's "person" covers most of the portrait


def test_truncated_or_non_tar_archive_is_one_line(tmp_path, capsys):
    archive = tmp_path / "deeplabv3_pascal_train_aug_2018_01_04.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(LABELS, arcname="model.ckpt.index")
    archive.write_bytes(archive.read_bytes()[:40])  # truncated
    not_tar = tmp_path / "other.tar.gz"
    not_tar.write_bytes(b"not a tar file")
    for path in (archive, not_tar):
        assert main(["convert", "deeplab-tf", str(path), "--output", str(tmp_path / "m.pt")]) == 2
        err = capsys.readouterr().err
        expected = f"zoo convert: error: {path} is not a complete tar archive (truncated, or not a tar file)"
        assert err.startswith(expected) and err.count("\n") == 1


# ---------------------------------------------------------------- against the interpreter, on real photographs


@needs_voc
def test_float_model_logits_equal_the_interpreters(converted):
    it, model = interpreter(FLOAT), converted[FLOAT]
    for name in IDS:
        image, _ = letterbox(VOC / "JPEGImages" / f"{name}.jpg", 257)
        ref = torch.from_numpy(run_tflite(it, image)).permute(2, 0, 1)
        ours = run_zoo(model, image)
        assert (ours - ref).abs().max() <= 1e-4 * ref.abs().max()
        assert (ours.argmax(0) == ref.argmax(0)).float().mean() >= 0.999


@needs_voc
def test_quantized_model_in_fp32_agrees_with_the_int8_interpreter(converted):
    """Photos resized to the model's 513x513 input, as its published demos feed it. (Letterboxed with grey padding
    the int8 model is unstable: TFLite's own XNNPACK and reference int8 kernels then agree on only 92% of one
    photo's pixels.)"""
    it, model = interpreter(QUANT), converted[QUANT]
    ours_confusion, ref_confusion = torch.zeros(21, 21, dtype=torch.long), torch.zeros(21, 21, dtype=torch.long)
    agree = []
    for name in IDS:
        photo = Image.open(VOC / "JPEGImages" / f"{name}.jpg").convert("RGB")
        image = np.asarray(photo.resize((513, 513), Image.BILINEAR))
        ref = run_tflite(it, image)
        ours = run_zoo(model, image).argmax(0).numpy()
        agree.append((ours == ref).mean())
        target = torch.from_numpy(np.asarray(Image.open(VOC / "SegmentationClass" / f"{name}.png"))).long()
        ours_confusion += confusion(to_original(ours, (513, 513), target.shape), target)
        ref_confusion += confusion(to_original(ref, (513, 513), target.shape), target)
    assert np.mean(agree) >= 0.98 and min(agree) >= 0.95, agree
    ours_miou, ref_miou = scores_from_confusion(ours_confusion).miou, scores_from_confusion(ref_confusion).miou
    assert abs(ours_miou - ref_miou) <= 0.02 and ref_miou > 0.3, (ours_miou, ref_miou)


@pytest.mark.slow
def test_exported_onnx_graph_keeps_tf_same_padding_dynamic(converted, tmp_path):
    """One ONNX graph for every input size: TF's SAME pads differ for even and odd sides."""
    from zoo.infer.onnx import export_onnx, ort_session

    model = converted[QUANT]
    session = ort_session(export_onnx(model, tmp_path / "m.onnx").read_bytes())
    for h, w in [(64, 96), (65, 97), (50, 77)]:
        x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(h))
        with torch.no_grad():
            expected = model(x).numpy()
        out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        assert np.abs(out - expected).max() <= 1e-4 * np.abs(expected).max()
