"""OpenVINO as a back-end and an export format; the engine choice of backend="auto" and its cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import helpers
import pytest
import torch
from torch import nn

from zoo.checkpoint import save_model
from zoo.cli import main
from zoo.errors import ZooWarning
from zoo.infer import engines, precision
from zoo.infer.optimize import optimize_for_inference

openvino_only = pytest.mark.skipif(not precision.has_openvino(), reason="openvino is not installed")


@pytest.fixture
def model():
    return helpers.decisive(helpers.tiny_model(num_classes=3), 3).eval()


# ----------------------------------------------------------------------------------------------------------------------
# The choice and its cache (no engine is built)


def test_choose_keeps_the_fastest_that_passed() -> None:
    timings = {"onnxruntime": 30.0, "openvino": 12.0, "eager": 50.0}
    assert engines.choose(timings, {"onnxruntime", "openvino", "eager"}) == "openvino"
    assert engines.choose(timings, {"onnxruntime", "eager"}) == "onnxruntime"  # the fastest failed the check
    with pytest.raises(RuntimeError, match="no engine passed the accuracy check"):
        engines.choose(timings, set())


def test_candidates_follow_precision_installed_packages_and_zoo_engines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZOO_ENGINES")
    assert engines.candidates("fp32", openvino=True) == ["onnxruntime", "openvino", "eager"]
    assert engines.candidates("fp32", openvino=False) == ["onnxruntime", "eager"]
    assert engines.candidates("int8", openvino=True) == ["onnxruntime", "openvino"]
    assert engines.candidates("bf16", openvino=False) == ["eager", "compile"]
    assert engines.candidates("fp32", "cuda", openvino=True) == ["compile", "eager"]
    monkeypatch.setenv("ZOO_ENGINES", "openvino, eager")
    assert engines.candidates("fp32", openvino=True) == ["openvino", "eager"]


def test_cache_key_changes_with_each_part(model) -> None:
    base = dict(model=model, input_shape=(1, 3, 64, 64), precision="fp32", names=["onnxruntime", "eager"])
    key = engines.choice_key(**base, num_threads=2, cpu="X")
    assert key == engines.choice_key(**base, num_threads=2, cpu="X")
    changed = [
        engines.choice_key(**{**base, "input_shape": (1, 3, 96, 64)}, num_threads=2, cpu="X"),
        engines.choice_key(**{**base, "precision": "int8"}, num_threads=2, cpu="X"),
        engines.choice_key(**base, num_threads=1, cpu="X"),
        engines.choice_key(**base, num_threads=2, cpu="Y"),
    ]
    other = helpers.tiny_model(num_classes=3).eval()
    with torch.no_grad():
        next(other.parameters()).add_(1e-3)
    changed.append(engines.choice_key(**{**base, "model": other}, num_threads=2, cpu="X"))
    assert key not in changed and len(set(changed)) == len(changed)
    assert engines.cpu_identity() == engines.cpu_identity() and " | " in engines.cpu_identity()


def test_cache_hit_miss_and_corrupt_file(tmp_path: Path) -> None:
    cache = engines.EngineCache(tmp_path / "engines.json")
    assert cache.get("k", ["onnxruntime", "eager"]) is None  # miss: no file
    cache.put("k", "eager", {"onnxruntime": 2.0, "eager": 1.0})
    assert cache.get("k", ["onnxruntime", "eager"]) == {
        "backend": "eager",
        "timings_ms": {"onnxruntime": 2.0, "eager": 1.0},
    }
    assert cache.get("other", ["onnxruntime", "eager"]) is None  # miss: another key
    assert cache.get("k", ["onnxruntime"]) is None  # the remembered engine is no longer a candidate
    (tmp_path / "engines.json").write_text("{not json")
    with pytest.warns(ZooWarning, match=r"ignored the engine cache .*engines.json"):
        assert cache.get("k", ["onnxruntime", "eager"]) is None
    (tmp_path / "engines.json").write_text(json.dumps({"format": 99, "choices": {}}))
    with pytest.warns(ZooWarning, match="not a format-1 engine cache"):
        cache.put("k2", "onnxruntime", {"onnxruntime": 1.0})  # replaces the unreadable file
    assert json.loads((tmp_path / "engines.json").read_text())["choices"] == {
        "k2": {"backend": "onnxruntime", "timings_ms": {"onnxruntime": 1.0}}
    }
    (tmp_path / "engines.json").write_text(json.dumps({"format": 1, "choices": {"k": {"backend": "eager"}}}))
    assert cache.get("k", ["eager"]) is None  # a record without timings is not trusted


def test_auto_remembers_its_choice_and_builds_only_that_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    from zoo.infer import optimize

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4)).eval()
    x = torch.rand(1, 3, 48, 48)
    first = optimize_for_inference(model, x, warmup=0, trials=1)
    assert set(first.timings_ms) == {"onnxruntime", "eager"}
    built = []
    build = optimize._build_runner
    monkeypatch.setattr(optimize, "_build_runner", lambda name, *a: built.append(name) or build(name, *a))
    second = optimize_for_inference(model, x, warmup=0, trials=1)
    assert built == [first.backend] and second.backend == first.backend and second.timings_ms == first.timings_ms
    optimize_for_inference(model, torch.rand(1, 3, 32, 48), warmup=0, trials=1)  # another size: measured again
    assert built[1:] == ["onnxruntime", "eager"]
    optimize_for_inference(model, x, warmup=0, trials=1, cache_choice=False)
    assert built[3:] == ["onnxruntime", "eager"]


# ----------------------------------------------------------------------------------------------------------------------
# Missing engine or instruction set


def test_missing_openvino_is_one_clear_error(model, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "has_openvino", lambda nncf=False: False)
    with pytest.raises(ValueError, match=r"^backend: 'openvino' needs openvino: pip install 'zoo\[openvino\]'$"):
        optimize_for_inference(model, torch.rand(1, 3, 32, 32), backend="openvino")
    with pytest.raises(ValueError, match=r"^backend: 'openvino' needs openvino and nncf"):
        precision.check_precision("int8", backend="openvino", calibration=[torch.rand(1, 3, 8, 8)])
    monkeypatch.setattr(precision, "has_openvino", lambda nncf=False: True)
    with pytest.raises(ValueError, match="^backend: 'openvino' needs a CPU with SSE4.2"):
        precision.require_openvino(flags=frozenset({"sse2"}))
    with pytest.raises(ValueError, match="^backend: 'openvino' runs fp32, bf16 or int8 on the CPU only"):
        precision.check_precision("fp16", backend="openvino")
    ice_lake = frozenset({"sse4_2", "avx2", "avx512f", "avx512_vnni"})  # AVX-512 and VNNI, no BF16, no AMX
    monkeypatch.setattr(precision, "cpu_flags", lambda: ice_lake)
    with pytest.raises(ValueError, match="^precision: 'bf16' on the CPU needs one of the instruction sets"):
        precision.check_precision("bf16", backend="openvino")


# ----------------------------------------------------------------------------------------------------------------------
# OpenVINO itself


@openvino_only
def test_openvino_fp32_matches_the_model_at_any_size(model) -> None:
    optimized = optimize_for_inference(model, torch.rand(1, 3, 48, 48), backend="openvino", num_threads=1)
    assert optimized.backend == "openvino" and optimized.max_abs_diff["openvino"] <= 1e-3
    for shape in [(1, 3, 64, 64), (2, 3, 57, 83)]:
        x = torch.rand(shape)
        with torch.no_grad():
            expected = model(x)
        assert (optimized(x) - expected).abs().max().item() <= 1e-3


def tf_same_net() -> nn.Module:
    """A strided conv after TF's SAME padding: the pads depend on the input's size (odd or even)."""
    from zoo.encoders.mobilenet import TFSamePad

    torch.manual_seed(0)
    return nn.Sequential(TFSamePad(3, 2), nn.Conv2d(3, 4, 3, stride=2), nn.ReLU6()).eval()


@openvino_only
def test_openvino_runner_fixes_the_first_shapes_then_runs_dynamic_and_returns_channels_last() -> None:
    """A model compiled for one shape must serve only that shape."""
    from zoo.infer.openvino import OpenVinoRunner

    net = tf_same_net()
    runner = OpenVinoRunner(net, torch.rand(1, 3, 33, 33), num_threads=1, max_shapes=2)
    for shape in [(1, 3, 33, 33), (1, 3, 32, 32), (1, 3, 25, 38), (1, 3, 33, 33)]:
        x = torch.rand(shape)
        with torch.no_grad():
            expected = net(x)
        out = runner(x)
        assert out.shape == expected.shape and out.is_contiguous(memory_format=torch.channels_last)
        assert (out - expected).abs().max().item() <= 1e-4 * expected.abs().max().item()
    assert list(runner.compiled) == [(1, 3, 32, 32), (1, 3, 33, 33)] and runner.dynamic is not None


@openvino_only
def test_every_compile_and_read_goes_through_the_processs_one_core(monkeypatch: pytest.MonkeyPatch) -> None:
    """A runner compiles one model per input shape; all of them come from one ``openvino.Core``."""
    import openvino

    from zoo.infer import openvino as zoo_openvino

    made = []
    real = openvino.Core
    monkeypatch.setattr(openvino, "Core", lambda: made.append(real()) or made[-1])
    zoo_openvino.core.cache_clear()
    try:
        runner = zoo_openvino.OpenVinoRunner(tf_same_net(), torch.rand(1, 3, 33, 33), num_threads=1, max_shapes=2)
        for shape in [(1, 3, 32, 32), (1, 3, 25, 38)]:
            runner(torch.rand(shape))
        assert len(runner.compiled) == 2 and runner.dynamic is not None
        assert len(made) == 1 and zoo_openvino.core() is made[0]
    finally:
        zoo_openvino.core.cache_clear()


@openvino_only
def test_openvino_runner_argmax_returns_the_class_map_inside_the_engine() -> None:
    from zoo.errors import ArgumentError
    from zoo.infer.openvino import OpenVinoRunner

    net = tf_same_net()
    runner = OpenVinoRunner(net, torch.rand(1, 3, 33, 33), num_threads=1, argmax=True)
    for seed, shape in enumerate([(1, 3, 33, 33), (2, 3, 40, 24)]):
        x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            expected = net(x).argmax(1)
        mask = runner(x)
        assert mask.dtype == torch.int64 and torch.equal(mask, expected)

    class Named(nn.Module):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"out": net(x)}

    with pytest.raises(ArgumentError, match=r"^argmax: needs a model with one N×C×H×W output \(its logits\)$"):
        OpenVinoRunner(Named(), torch.rand(1, 3, 33, 33), argmax=True)


@openvino_only
def test_openvino_int8_uses_nncf_full_bias_correction(monkeypatch: pytest.MonkeyPatch) -> None:
    import nncf

    from zoo.infer.openvino import quantize

    seen = {}
    monkeypatch.setattr(nncf, "quantize", lambda model, dataset, **kwargs: seen.update(kwargs) or model)
    assert quantize("the model", [torch.rand(1, 3, 8, 8), torch.rand(2, 3, 8, 8)]) == "the model"
    assert seen == {"subset_size": 2, "fast_bias_correction": False}


@openvino_only
def test_export_openvino_round_trip_and_metadata(model, tmp_path: Path) -> None:
    import openvino as ov

    from zoo.infer.openvino import compile_model, read_meta

    model.class_names, model.palette = ["bg", "cat", "dog"], [[0, 0, 0], [128, 0, 0], [0, 128, 0]]
    checkpoint = save_model(model, tmp_path / "m.pt")
    assert (
        main(["export", "--checkpoint", str(checkpoint), "--format", "openvino", "--output", str(tmp_path / "m.xml")])
        == 0
    )
    assert (tmp_path / "m.bin").is_file()
    meta = read_meta(tmp_path / "m.xml")
    assert meta["class_names"] == ["bg", "cat", "dog"] and meta["palette"][1] == [128, 0, 0]
    assert meta["mean"] == [float(v) for v in model.mean] and meta["std"] == [float(v) for v in model.std]
    compiled = compile_model(ov.Core().read_model(str(tmp_path / "m.xml")), "fp32", 1)
    x = torch.rand(1, 3, 70, 50)
    with torch.no_grad():
        expected = model(x)
    assert (torch.from_numpy(compiled(x.numpy())[0]) - expected).abs().max().item() <= 1e-3
    assert (
        main(["export", "--checkpoint", str(checkpoint), "--format", "openvino", "--output", str(tmp_path / "m.ir")])
        == 2
    )


@pytest.mark.slow
@openvino_only
def test_openvino_int8_through_nncf_and_its_report(model, monkeypatch: pytest.MonkeyPatch) -> None:
    from zoo.infer.accuracy import quantization_report

    monkeypatch.delenv("ZOO_ENGINES")
    calibration = [torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    x = torch.rand(1, 3, 48, 48)
    int8 = optimize_for_inference(model, x, backend="openvino", precision="int8", calibration=calibration)
    assert int8.backend == "openvino" and int8.calibration_images == 4 and int8.calibration_ranges is None
    report = quantization_report(model, int8, calibration)
    assert report.pixel_agreement >= 0.9
    auto = optimize_for_inference(model, x, precision="int8", calibration=calibration, warmup=0, trials=1)
    assert set(auto.timings_ms) <= {"onnxruntime", "openvino"} and auto.backend in auto.timings_ms


def test_cli_names_fast_backend_when_openvino_is_missing(
    model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(precision, "has_openvino", lambda nncf=False: False)
    checkpoint = save_model(model, tmp_path / "m.pt")
    args = ["--checkpoint", str(checkpoint), "--fast-backend", "openvino"]
    assert main(["predict", *args, "--input", str(tmp_path), "--output", str(tmp_path / "out")]) == 2
    expected = "error: argument --fast-backend: 'openvino' needs openvino: pip install 'zoo[openvino]'"
    assert capsys.readouterr().err.strip() == f"zoo predict: {expected}"


@pytest.mark.slow
@openvino_only
def test_cli_predict_with_openvino_matches_eager(model, tmp_path: Path) -> None:
    from PIL import Image

    checkpoint = save_model(model, tmp_path / "m.pt")
    image = tmp_path / "in" / "a.png"
    image.parent.mkdir()
    Image.fromarray((torch.rand(40, 56, 3) * 255).byte().numpy()).save(image)
    for backend in ("eager", "openvino"):
        args = ["--checkpoint", str(checkpoint), "--fast-backend", backend, "--input", str(image.parent)]
        assert main(["predict", *args, "--output", str(tmp_path / backend)]) == 0
    masks = [sorted((tmp_path / b).rglob("*.png")) for b in ("eager", "openvino")]
    assert masks[0] and [p.name for p in masks[0]] == [p.name for p in masks[1]]
    for a, b in zip(*masks, strict=True):
        assert (torch.tensor(list(Image.open(a).getdata())) == torch.tensor(list(Image.open(b).getdata()))).all()


def test_engines_table_times_alternating_rounds_against_smp(monkeypatch: pytest.MonkeyPatch) -> None:
    from zoo.benchmark import BenchmarkConfig
    from zoo.benchmark import engines as table

    engines_here = (("zoo eager fp32", "eager", "fp32"), ("zoo eager bf16 (autocast)", "eager", "bf16"))
    monkeypatch.setattr(table, "ENGINES", engines_here)
    config = BenchmarkConfig(
        models=["xception41:deeplabv3plus"], sizes=[(32, 32)], encoder_kwargs={"width": 0.125}, rounds=2, repeats=1
    )
    rows = {row.engine: row for row in table.run_engines(config)}
    assert list(rows) == ["smp eager fp32", "zoo eager fp32", "zoo eager bf16 (autocast)"]
    for name in ("smp eager fp32", "zoo eager fp32"):
        assert len(rows[name].times) == 2 and rows[name].latency_ms > 0 and rows[name].speedup > 0
    assert rows["smp eager fp32"].speedup == 1.0
    bf16 = rows["zoo eager bf16 (autocast)"]
    assert bf16.latency_ms is not None or "instruction sets" in bf16.note  # refused, with the reason, without bf16
    assert "| zoo eager fp32 |" in table.markdown_table(list(rows.values()))


@pytest.mark.slow
@openvino_only
def test_openvino_and_torch_compile_in_one_process_do_not_crash(tmp_path: Path) -> None:
    """Run in a subprocess, so that a segmentation fault fails this test instead of killing pytest."""
    import subprocess
    import sys

    script = tmp_path / "both.py"
    script.write_text(
        "import torch, zoo\n"
        "from zoo.infer.optimize import optimize_for_inference\n"
        "torch.manual_seed(0)\n"
        "m = zoo.build_model('xception41', 'deeplabv3plus', num_classes=3, encoder_kwargs={'width': 0.125}).eval()\n"
        "x = torch.rand(1, 3, 48, 48)\n"
        "for backend in ('openvino', 'compile', 'openvino'):\n"
        "    fast = optimize_for_inference(m, x, backend, cache_choice=False)\n"
        "    assert fast.max_abs_diff[backend] <= 1e-3, fast.max_abs_diff\n"
        "print('ok')\n"
    )
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), (done.returncode, done.stderr[-2000:])
