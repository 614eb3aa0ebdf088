"""ONNX export (zoo export) and the ONNX Runtime backend of zoo predict."""

from __future__ import annotations

from pathlib import Path

import helpers
import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from zoo import save_model
from zoo.cli import main
from zoo.infer.onnx import OnnxModel, export_onnx
from zoo.infer.predictor import Predictor

CLASSES = ["background", "a", "b"]


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    """A tiny model (xception41: fewer layers, quicker to export); its classifier is scaled so logits are ~1."""
    torch.manual_seed(0)
    net = helpers.tiny_model(encoder="xception41").eval()
    with torch.no_grad():
        for module in net.decoder.modules():
            if isinstance(module, torch.nn.Conv2d) and module.out_channels == 3:
                module.weight.mul_(1e4)
    return net


@pytest.fixture(scope="module")
def checkpoint(model: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_model(model, tmp_path_factory.mktemp("ckpt") / "tiny.pt", class_names=CLASSES)


@pytest.fixture(scope="module")
def onnx_file(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    assert main(["export", "--checkpoint", str(checkpoint), "--onnx", str(path)]) == 0
    return path


def dims(path: Path) -> list[str | int]:
    shape = onnx.load(str(path)).graph.input[0].type.tensor_type.shape
    return [d.dim_param or d.dim_value for d in shape.dim]


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (2, 3, 45, 97)])
def test_onnx_logits_equal_pytorch(model: torch.nn.Module, onnx_file: Path, shape: tuple[int, ...]) -> None:
    x = torch.randn(*shape)
    with torch.no_grad():
        expected = model(x)
    got = OnnxModel(onnx_file)(x)
    assert got.shape == expected.shape
    assert expected.abs().max().item() > 0.1
    assert (got - expected).abs().max().item() <= 1e-3


@pytest.mark.slow
def test_onnx_file_is_dynamic_and_describes_the_model(onnx_file: Path) -> None:
    proto = onnx.load(str(onnx_file))
    assert proto.opset_import[0].version >= 17
    assert dims(onnx_file) == ["batch", 3, "height", "width"]
    meta = OnnxModel(onnx_file).meta
    assert meta["class_names"] == CLASSES and meta["build_args"]["encoder"] == "xception41"


@pytest.mark.slow
def test_predict_with_onnx_backend(tmp_path: Path, checkpoint: Path, onnx_file: Path) -> None:
    image = np.random.default_rng(0).integers(0, 256, (41, 58, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "x.png")
    code = main(
        ["predict", "--onnx", str(onnx_file), "--input", str(tmp_path / "x.png"), "--output", str(tmp_path / "out")]
    )  # fmt: skip  (--onnx alone implies the ONNX back-end)
    assert code == 0
    assert np.array(Image.open(tmp_path / "out" / "pred" / "x.png")).shape == (41, 58)
    torch_logits = Predictor.from_checkpoint(checkpoint).logits([image])
    onnx_logits = Predictor.from_onnx(onnx_file).logits([image])
    assert (onnx_logits - torch_logits).abs().max().item() <= 1e-3


@pytest.mark.slow
def test_opset_17_uses_the_torchscript_exporter(model: torch.nn.Module, tmp_path: Path) -> None:
    path = export_onnx(model, tmp_path / "m17.onnx", opset=17)
    assert onnx.load(str(path)).opset_import[0].version == 17
    assert dims(path) == ["batch", 3, "height", "width"]
    x = torch.randn(1, 3, 50, 70)
    with torch.no_grad():
        expected = model(x)
    assert (OnnxModel(path)(x) - expected).abs().max().item() <= 1e-3


def test_bad_opset_and_onnx_arguments(model: torch.nn.Module, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ValueError, match="opset must be at least 17"):
        export_onnx(model, tmp_path / "m.onnx", opset=13)
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    assert main(["predict", "--backend", "onnx", "--input", str(image), "--output", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == "zoo predict: error: --backend onnx needs --onnx FILE"
    with pytest.raises(FileNotFoundError, match="no such ONNX file"):
        OnnxModel(tmp_path / "missing.onnx")
