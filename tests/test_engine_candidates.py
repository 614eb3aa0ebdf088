"""The int8 and bf16 candidates beyond ONNX Runtime and OpenVINO: torchao's PT2E int8 and torch.compile bf16, where
each is offered, and the one-line refusals where a package or an instruction set is missing."""

from __future__ import annotations

import helpers
import pytest
import torch

from zoo.infer import engines, precision
from zoo.infer.optimize import optimize_for_inference

pytestmark = pytest.mark.usefixtures("one_thread")

ICE_LAKE = frozenset({"sse4_2", "avx2", "avx512f", "avx512_vnni"})  # AVX-512 and VNNI, no BF16, no AMX
SAPPHIRE_RAPIDS = ICE_LAKE | {"avx512_bf16", "amx_bf16", "amx_int8", "amx_tile"}


@pytest.fixture
def model():
    return helpers.decisive(helpers.tiny_model(num_classes=3), 3).eval()


def test_candidates_per_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZOO_ENGINES", raising=False)
    amx = engines.candidates("int8", openvino=True, torchao=True, flags=SAPPHIRE_RAPIDS)
    assert amx == ["onnxruntime", "openvino", "torchao"]
    assert engines.candidates("int8", openvino=True, torchao=True, flags=ICE_LAKE) == ["onnxruntime", "openvino"]
    assert engines.candidates("int8", openvino=False, torchao=False, flags=SAPPHIRE_RAPIDS) == ["onnxruntime"]
    bf16 = engines.candidates("bf16", openvino=True, torchao=True, flags=SAPPHIRE_RAPIDS)
    assert bf16 == ["eager", "compile", "openvino"]
    monkeypatch.setenv("ZOO_ENGINES", "compile")
    assert engines.candidates("bf16", openvino=True, flags=SAPPHIRE_RAPIDS) == ["compile"]


@pytest.mark.parametrize("backend", ["compile", "auto"])
def test_bf16_is_refused_without_bf16_instructions(model, monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    monkeypatch.setattr(precision, "cpu_flags", lambda: ICE_LAKE)
    with pytest.raises(ValueError, match=r"^precision: 'bf16' on the CPU needs one of the instruction sets \["):
        optimize_for_inference(model, torch.rand(1, 3, 32, 32), backend, precision="bf16")


def test_bf16_compile_is_built_where_the_cpu_has_bf16(model, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a bf16 CPU the compile candidate is channels-last, compiled at build time with Inductor's freezing."""
    monkeypatch.setattr(precision, "cpu_flags", lambda: SAPPHIRE_RAPIDS)
    calls = []

    def fake_compile(module, mode=None):
        from torch._inductor import config as inductor_config

        def run(x):
            calls.append((inductor_config.freezing, x.is_contiguous(memory_format=torch.channels_last)))
            return module(x)

        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    fast = optimize_for_inference(model, torch.rand(1, 3, 32, 32), "compile", precision="bf16", trials=1)
    assert fast.backend == "compile" and fast.precision == "bf16"
    assert calls[0] == (True, True)  # the first run (compilation) under freezing, in channels-last
    assert fast(torch.rand(1, 3, 32, 32)).dtype == torch.bfloat16


def test_torchao_refusals(model, monkeypatch: pytest.MonkeyPatch) -> None:
    batches = [torch.rand(1, 3, 32, 32)]
    with pytest.raises(ValueError, match="^backend: 'torchao' runs int8 on the CPU only, not fp32 on cpu"):
        optimize_for_inference(model, torch.rand(1, 3, 32, 32), "torchao")
    monkeypatch.setattr(precision, "has_torchao", lambda: False)
    with pytest.raises(ValueError, match=r"^backend: 'torchao' needs torchao: pip install 'zoo\[torchao\]'$"):
        optimize_for_inference(model, torch.rand(1, 3, 32, 32), "torchao", precision="int8", calibration=batches)
    assert engines.candidates("int8", openvino=False, flags=SAPPHIRE_RAPIDS) == ["onnxruntime"]


@pytest.mark.slow
@pytest.mark.skipif(not precision.has_torchao(), reason="torchao is not installed")
def test_torchao_int8_agrees_with_fp32_and_builds_each_shape() -> None:
    """Random weights with random BatchNorm statistics: activations of order one, as in a trained model (at the
    initialisation's 1e-5 logits, per-tensor int8 activations collapse to zero)."""
    model = helpers.tiny_model(num_classes=3)
    model.load_state_dict(helpers.randomise(model.state_dict()))
    model.eval()
    calibration = [torch.rand(1, 3, 40, 48, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    fast = optimize_for_inference(model, x, "torchao", precision="int8", calibration=calibration)
    assert fast.backend == "torchao" and fast.calibration_images == 4
    for size in ((32, 32), (40, 24)):
        x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            expected = model(x)
        got = fast(x)
        assert got.shape == expected.shape
        assert (got.argmax(1) == expected.argmax(1)).float().mean().item() >= 0.9
    assert len(fast.runner.graphs) == 2


def test_auto_int8_judges_agreement_on_the_calibration_images(model, monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine that agrees on the (random) example input but not on the real images is not kept."""
    from zoo.infer import optimize

    example = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    calibration = [torch.rand(1, 3, 40, 48, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    with torch.no_grad():
        reference = model(example)

    def build(name, module, x, *options):
        if name == "openvino":  # right on the example's shape only
            return lambda y: module(y) if y.shape == example.shape else -module(y)
        return lambda y: module(y)

    monkeypatch.setattr(optimize, "_build_runner", build)
    monkeypatch.setattr(engines, "candidates", lambda precision, device_type="cpu": ["onnxruntime", "openvino"])
    with pytest.warns(UserWarning, match=r"skipped openvino: backend 'openvino' agrees with the model on \d"):
        fast = optimize_for_inference(
            model, example, "auto", precision="int8", calibration=calibration, cache_choice=False, trials=1
        )
    assert fast.backend == "onnxruntime"
    assert torch.equal(fast(example).argmax(1), reference.argmax(1))
