"""int8 and bf16 on the CPU: the quantized fast path's contract, its agreement with fp32, the accuracy report and
the errors (no calibration data, a CPU without the instructions). Speed is measured in benchmarks/, never here."""

from __future__ import annotations

import json
import platform
import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from helpers import TinyEncoder
from PIL import Image

from zoo import build_model, quantization_report, save_model
from zoo.cli import main
from zoo.data.io import write_image
from zoo.data.shapes import ShapesDataset
from zoo.decoders import DECODERS
from zoo.errors import ZooWarning
from zoo.infer import precision, quantize
from zoo.infer.onnx import OnnxModel
from zoo.infer.optimize import optimize_for_inference
from zoo.infer.predictor import LazyOptimized, Predictor
from zoo.models import SegmentationModel

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 32


def _batches(dataset: ShapesDataset) -> tuple[torch.Tensor, torch.Tensor]:
    items = [dataset[i] for i in range(len(dataset))]
    images = torch.stack([torch.from_numpy(item["image"]).permute(2, 0, 1).float() / 255 for item in items])
    masks = torch.stack([torch.from_numpy(np.asarray(item["mask"]).astype(np.int64)) for item in items])
    return images, masks


@pytest.fixture(scope="module")
def shapes() -> dict[str, torch.Tensor]:
    train_x, train_y = _batches(ShapesDataset(split="train", num_images=64, size=SIZE))
    val_x, val_y = _batches(ShapesDataset(split="val", num_images=8, size=SIZE))
    return {"train_x": train_x, "train_y": train_y, "val_x": val_x, "val_y": val_y}


@pytest.fixture(scope="module")
def trained(shapes: dict[str, torch.Tensor]) -> SegmentationModel:
    """A tiny DeepLabV3+ trained for seconds on 32x32 shapes (its logits are far from ties, unlike a random model's)."""
    torch.manual_seed(0)
    encoder = TinyEncoder(16, channels=(8, 12, 16, 16, 16))
    decoder = DECODERS.get("deeplabv3plus")(
        encoder.feature_info, 5, 16, aspp_channels=16, low_level_channels=8, decoder_channels=16
    )
    model = SegmentationModel(encoder, decoder, 5).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        index = torch.randint(0, len(shapes["train_x"]), (8,))
        logits = model(shapes["train_x"][index])
        loss = torch.nn.functional.cross_entropy(logits, shapes["train_y"][index], ignore_index=255)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def int8(trained: SegmentationModel, shapes: dict[str, torch.Tensor]):
    example = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    return optimize_for_inference(trained, example, precision="int8", calibration=shapes["train_x"][:16])


def _masks(shapes: dict[str, torch.Tensor]) -> list[np.ndarray]:
    return [m.numpy() for m in shapes["val_y"]]


def test_int8_keeps_the_output_contract(trained: SegmentationModel, int8) -> None:
    assert int8.precision == "int8" and int8.backend == "onnxruntime"
    assert int8.calibration_images == 16 and int8.calibration_ranges
    for shape in ((1, 3, SIZE, SIZE), (2, 3, 45, 70), (1, 3, 17, 23)):
        out = int8(torch.rand(*shape))
        assert out.shape == (shape[0], 5, *shape[2:]) and out.dtype == torch.float32
    graph = onnx.load_from_string(int8.runner.graph)
    ops = {node.op_type for node in graph.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops


def test_int8_agrees_with_fp32_on_a_trained_model(trained: SegmentationModel, int8, shapes) -> None:
    report = quantization_report(trained, int8, list(shapes["val_x"]), _masks(shapes))
    assert report.images == 8 and report.pixels == 8 * SIZE * SIZE
    assert report.pixel_agreement >= 0.98, report.lines()
    assert abs(report.miou_quantized - report.miou_reference) < 0.05, report.lines()
    assert report.calibration_images == 16 and report.range_coverage is not None
    assert not [w for w in report.warnings if "calibrat" in w], report.warnings


def test_report_shows_too_few_and_unlike_calibration_images(trained: SegmentationModel, shapes) -> None:
    noise = [torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))]
    fast = optimize_for_inference(trained, shapes["val_x"][:1], precision="int8", calibration=noise)
    report = quantization_report(trained, fast, list(shapes["val_x"]), _masks(shapes))
    assert report.calibration_images == 2
    assert any("only 2 images" in w for w in report.warnings)
    assert report.range_coverage < 0.8 and any("unlike" in w for w in report.warnings)
    assert "warning:" in "\n".join(report.lines())


def test_report_without_masks_and_bad_inputs(trained: SegmentationModel) -> None:
    images = [np.full((20, 30, 3), 128, np.uint8)]
    report = quantization_report(trained, trained, images, check_ranges=False)
    assert report.pixel_agreement == 1.0 and report.miou_reference is None and report.calibration_images is None
    with pytest.raises(ValueError, match="at least one image"):
        quantization_report(trained, trained, [])
    with pytest.raises(ValueError, match="^masks: one mask per image: the counts differ from item 2 on$"):
        quantization_report(trained, trained, images, [np.zeros((20, 30))] * 2)


def test_int8_needs_calibration_data(trained: SegmentationModel, tmp_path: Path) -> None:
    x = torch.rand(1, 3, SIZE, SIZE)
    with pytest.raises(ValueError, match="calibration"):
        optimize_for_inference(trained, x, precision="int8")
    with pytest.raises(ValueError, match="^calibration: folder .*missing does not exist$"):
        optimize_for_inference(trained, x, precision="int8", calibration=tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="holds no images"):
        optimize_for_inference(trained, x, precision="int8", calibration=tmp_path)
    with pytest.raises(ValueError, match="empty"):
        optimize_for_inference(trained, x, precision="int8", calibration=[])
    with pytest.raises(ValueError, match="RGB in 0..1"):
        optimize_for_inference(trained, x, precision="int8", calibration=[torch.randn(1, 3, 8, 8) * 3])
    with pytest.raises(
        ValueError,
        match="^backend: precision 'int8' runs on one of \\['auto', 'onnxruntime', 'openvino', 'torchao'\\], "
        "not 'eager'",
    ):
        optimize_for_inference(trained, x, backend="eager", precision="int8", calibration=[x])


def test_calibration_folder_gives_batches_in_0_1(tmp_path: Path) -> None:
    for index, size in enumerate(((20, 30), (25, 17))):
        write_image(tmp_path / f"{index}.png", np.random.default_rng(index).integers(0, 256, (*size, 3), np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    batches = quantize.calibration_batches(tmp_path)
    assert [tuple(b.shape) for b in batches] == [(1, 3, 20, 30), (1, 3, 25, 17)]
    assert all(0.0 <= b.min() and b.max() <= 1.0 for b in batches)
    assert len(quantize.calibration_batches(tmp_path, limit=1)) == 1


def test_unsupported_cpu_is_an_error(trained: SegmentationModel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"sse4_2"}))
    with pytest.raises(ValueError, match="instruction sets"):
        quantize.check_cpu_precision("int8")
    with pytest.raises(ValueError, match="instruction sets"):
        optimize_for_inference(trained, torch.rand(1, 3, SIZE, SIZE), precision="bf16")
    quantize.check_cpu_precision("fp32")
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    quantize.check_cpu_precision("int8")
    quantize.check_cpu_precision("bf16")
    assert not quantize.has_vnni()
    assert quantize.has_vnni(frozenset({"avx512_vnni"}))


def test_predictor_precision_implies_the_fast_path_and_needs_calibration(tmp_path: Path) -> None:
    path = save_model(build_model("xception41", "fcn", num_classes=3, encoder_kwargs={"width": 0.125}), tmp_path / "m")
    with pytest.raises(ValueError, match="^calibration: precision 'int8' needs calibration images"):
        Predictor.from_checkpoint(path, fast=True, precision="int8")
    with pytest.raises(ValueError, match="^calibration: folder .*missing does not exist$"):
        Predictor.from_checkpoint(path, precision="int8", calibration=tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="^calibration folder .* holds no images"):
        Predictor.from_checkpoint(path, precision="int8", calibration=tmp_path)
    with pytest.raises(ValueError, match="^device: 'int8' runs|^device: precision 'int8' runs on the CPU only"):
        precision.check_precision("int8", device="cuda", calibration=tmp_path)
    with pytest.raises(ValueError, match="^backend: precision 'int8' runs on one of"):
        precision.check_precision("int8", backend="eager", calibration=tmp_path)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    predictor = Predictor.from_checkpoint(path, precision="int8", calibration=tmp_path)  # no fast=True needed
    assert isinstance(predictor.model, LazyOptimized) and predictor.model.precision == "int8"


@pytest.mark.slow
def test_cli_export_predict_and_eval_in_int8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from zoo.data.shapes import write_shapes

    torch.manual_seed(0)
    model = build_model("xception41", "deeplabv3plus", num_classes=5, encoder_kwargs={"width": 0.125})
    checkpoint = save_model(model, tmp_path / "model.pt")
    root = write_shapes(tmp_path / "shapes", num_train=4, num_val=3, size=48)
    calibration = root / "JPEGImages"
    onnx_file = tmp_path / "int8.onnx"
    assert main(["export", "--checkpoint", str(checkpoint), "--onnx", str(onnx_file), "--precision", "int8",
                 "--calibration", str(calibration)]) == 0  # fmt: skip
    assert "check: pixel agreement" in capsys.readouterr().out
    onnx_model = OnnxModel(onnx_file)
    assert onnx_model.meta["build_args"]["num_classes"] == 5
    assert onnx_model(torch.rand(2, 3, 40, 56)).shape == (2, 5, 40, 56)
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(checkpoint), "--input", str(calibration), "--output", str(out),
                 "--fast", "--precision", "int8", "--calibration", str(calibration)]) == 0  # fmt: skip
    assert len(list((out / "pred").glob("*.png"))) == len(list(calibration.iterdir()))
    metrics = tmp_path / "eval"
    assert main(["eval", "--checkpoint", str(checkpoint), "--dataset", "voc", "--root", str(root), "--output",
                 str(metrics), "--precision", "int8", "--calibration", str(calibration)]) == 0  # fmt: skip
    report = json.loads((metrics / "metrics.json").read_text())["quantization_report"]
    assert report["images"] == 3 and 0.0 <= report["pixel_agreement"] <= 1.0 and report["miou_reference"] is not None


def test_benchmark_times_int8_beside_fp32() -> None:
    from zoo.benchmark import BenchmarkConfig, run_benchmark

    config = BenchmarkConfig(
        models=["xception41:fcn"],
        sizes=[(48, 48)],
        precision="int8",
        encoder_kwargs={"width": 0.125},
        warmup=1,
        repeats=1,
        rounds=1,
        threads=1,
    )
    rows = {row.impl: row for row in run_benchmark(config)}
    assert set(rows) == {"zoo", "zoo fast (onnxruntime, int8)"}, rows
    assert rows["zoo"].precision == "fp32" and rows["zoo fast (onnxruntime, int8)"].precision == "int8"
    assert rows["zoo fast (onnxruntime, int8)"].latency_ms > 0 and rows["zoo fast (onnxruntime, int8)"].error is None


def test_a_corrupt_calibration_file_is_skipped_named_and_counted(tmp_path: Path) -> None:
    for index in range(2):
        write_image(tmp_path / f"{index}.png", np.random.default_rng(index).integers(0, 256, (20, 30, 3), np.uint8))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.warns(ZooWarning) as caught:
        batches = quantize.calibration_batches(tmp_path)
    assert len(batches) == 2
    messages = [str(w.message) for w in caught]
    assert messages[0].startswith(f"calibration: skipped cannot read image {tmp_path / 'broken.jpg'}: truncated")
    assert messages[1] == f"calibration: skipped 1 of 3 files in {tmp_path} (broken.jpg)"
    for index in range(2):
        (tmp_path / f"{index}.png").write_bytes(b"")
    with pytest.warns(ZooWarning), pytest.raises(ValueError, match=f"^calibration: no readable image in {tmp_path}$"):
        quantize.calibration_batches(tmp_path)


def test_predict_int8_implies_the_fast_path_and_reports_a_corrupt_calibration_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = save_model(build_model("xception41", "fcn", num_classes=3, encoder_kwargs={"width": 0.125}), tmp_path / "m")
    calibration = tmp_path / "calibration"
    for index in range(2):
        write_image(calibration / f"{index}.png", np.random.default_rng(index).integers(0, 256, (32, 32, 3), np.uint8))
    (calibration / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    image = tmp_path / "x.png"
    write_image(image, np.random.default_rng(5).integers(0, 256, (32, 40, 3), np.uint8))
    argv = [
        "predict",
        "--checkpoint",
        str(path),
        "--input",
        str(image),
        "--output",
        str(tmp_path / "out"),
        "--precision",
        "int8",
        "--calibration",
        str(calibration),
    ]  # fmt: skip  (no --fast)
    assert main(argv) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(
        f"zoo predict: warning: calibration: skipped cannot read image {calibration / 'broken.png'}"
    )
    assert err[1] == f"zoo predict: warning: calibration: skipped 1 of 3 files in {calibration} (broken.png)"
    assert (tmp_path / "out" / "pred" / "x.png").is_file()


@pytest.mark.parametrize("command", ["predict", "eval", "benchmark"])
def test_precision_means_the_same_in_every_command(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """int8 without calibration (predict, eval) or bf16 on a CPU without bf16: the same line, naming the flag."""
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2"}))
    path = save_model(build_model("xception41", "fcn", num_classes=3, encoder_kwargs={"width": 0.125}), tmp_path / "m")
    argv = {
        "predict": ["predict", "--checkpoint", str(path), "--input", str(tmp_path), "--output", str(tmp_path / "o")],
        "eval": ["eval", "--checkpoint", str(path), "--dataset", "shapes", "--root", str(tmp_path), "--output",
                 str(tmp_path / "o")],
        "benchmark": ["benchmark", "--models", "xception41:fcn"],
    }[command]  # fmt: skip
    assert main([*argv, "--precision", "bf16"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"zoo {command}: error: argument --precision: 'bf16' on the CPU needs one of the instruction sets "
        f"{sorted(precision.BF16_FLAGS)}; this CPU ({platform.processor() or platform.machine()}) has none of them"
    )
    if command != "benchmark":  # the benchmark calibrates int8 on random images when given none
        assert main([*argv, "--precision", "int8"]) == 2
        assert capsys.readouterr().err.strip() == (
            f"zoo {command}: error: argument --calibration: precision 'int8' needs calibration images: a folder of "
            "images like the data"
        )


class Split:
    """A dataset split that makes each item when asked and counts how many are alive at once."""

    def __init__(self, count: int) -> None:
        self.count, self.alive, self.most_alive, self.made = count, 0, 0, 0

    def _made(self, array: np.ndarray) -> np.ndarray:
        self.alive += 1
        self.most_alive = max(self.most_alive, self.alive)
        weakref.finalize(array, self._freed)
        return array

    def _freed(self) -> None:
        self.alive -= 1

    def images(self) -> Iterator[np.ndarray]:
        for index in range(self.count):
            self.made += 1
            yield self._made(np.random.default_rng(index).integers(0, 256, (SIZE, SIZE, 3), np.uint8))

    def masks(self) -> Iterator[np.ndarray]:
        for index in range(self.count):
            yield np.random.default_rng(index).integers(0, 3, (SIZE, SIZE), np.uint8)


def test_the_accuracy_report_streams_its_images(trained: SegmentationModel) -> None:
    """Peak memory does not depend on the split's size: one image is held at a time, whatever the count."""
    reports, most_alive = {}, {}
    for count in (3, 12):
        split = Split(count)
        reports[count] = quantization_report(trained, trained, split.images(), split.masks(), check_ranges=False)
        assert split.made == count
        most_alive[count] = split.most_alive
    assert most_alive[3] == most_alive[12] <= 3  # the image in use, the next one, one in the iterators' hands
    assert reports[12].images == 12 and reports[12].pixel_agreement == 1.0
    assert reports[12].miou_reference == reports[12].miou_quantized is not None
