"""BatchNorm folding and the fast inference path (outputs equal to the model's; speed is never asserted)."""

from __future__ import annotations

import helpers
import pytest
import torch
from torch import nn

import zoo
from zoo.infer import onnx, precision
from zoo.infer.fold import count_batchnorms, find_conv_bn_pairs, fold_batchnorm, fold_conv_bn
from zoo.infer.optimize import OnnxRuntimeRunner, optimize_for_inference

pytestmark = pytest.mark.usefixtures("one_thread")


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, so folding has something to fold."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                    m.bias.copy_(torch.rand(n, generator=g) - 0.5)
    return model.eval()


class SeparableDwPwBn(nn.Module):
    """depthwise -> pointwise -> BN: only the pointwise conv may take the BatchNorm."""

    def __init__(self, chs: int = 8, out: int = 12) -> None:
        super().__init__()
        self.dw = nn.Conv2d(chs, chs, 3, padding=2, dilation=2, groups=chs, bias=False)
        self.pw = nn.Conv2d(chs, out, 1, bias=False)
        self.bn = nn.BatchNorm2d(out)

    def forward(self, x):
        return self.bn(self.pw(self.dw(x)))


class SeparableBnBoth(nn.Module):
    """depthwise -> BN -> ReLU -> pointwise -> BN (DeepLab's separable conv): both fold."""

    def __init__(self, chs: int = 8, out: int = 12) -> None:
        super().__init__()
        self.dw = nn.Conv2d(chs, chs, 3, padding=1, groups=chs, bias=False)
        self.bn_dw = nn.BatchNorm2d(chs)
        self.act = nn.ReLU(inplace=True)
        self.pw = nn.Conv2d(chs, out, 1, bias=False)
        self.bn_pw = nn.BatchNorm2d(out)

    def forward(self, x):
        return self.bn_pw(self.pw(self.act(self.bn_dw(self.dw(x)))))


class SharedConvOutput(nn.Module):
    """The conv's output also feeds a residual sum: folding the BN would change the sum, so it must not."""

    def __init__(self, chs: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(chs, chs, 3, padding=1)
        self.bn = nn.BatchNorm2d(chs)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


class InplaceBeforeBn(nn.Module):
    """An in-place activation between conv and BN: not a conv-BN pair."""

    def __init__(self, chs: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(chs, chs, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.bn = nn.BatchNorm2d(chs)

    def forward(self, x):
        return self.bn(self.act(self.conv(x)))


@pytest.mark.parametrize("groups", [1, 2, 8])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("affine", [False, True])
def test_fold_conv_bn_is_exact(groups: int, bias: bool, affine: bool) -> None:
    conv = nn.Conv2d(8, 8, 3, padding=1, groups=groups, bias=bias)
    bn = nn.BatchNorm2d(8, eps=1e-3, affine=affine)
    _randomise_bn(bn)
    x = torch.randn(2, 8, 17, 23)
    with torch.no_grad():
        expected = bn(conv(x))
        got = fold_conv_bn(conv, bn)(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_fold_conv_bn_rejects_mismatched_channels() -> None:
    with pytest.raises(ValueError, match="cannot fold a BatchNorm of 4 features into a conv of 8"):
        fold_conv_bn(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(4))


def test_fold_follows_data_flow_in_depthwise_pointwise_block() -> None:
    model = _randomise_bn(SeparableDwPwBn())
    x = torch.randn(1, 8, 21, 19)
    assert find_conv_bn_pairs(model, x) == [("pw", "bn")]
    folded = fold_batchnorm(model, x)
    assert folded.dw.bias is None  # the depthwise conv is untouched
    assert isinstance(folded.bn, nn.Identity)
    assert count_batchnorms(model) == 1  # the original is left as it was
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=0, atol=1e-5)


def test_fold_both_batchnorms_of_a_separable_conv() -> None:
    model = _randomise_bn(SeparableBnBoth())
    x = torch.randn(2, 8, 16, 16)
    assert sorted(find_conv_bn_pairs(model, x)) == [("dw", "bn_dw"), ("pw", "bn_pw")]
    folded = fold_batchnorm(model, x)
    assert count_batchnorms(folded) == 0
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("module_cls", [SharedConvOutput, InplaceBeforeBn])
def test_no_fold_when_conv_output_is_read_elsewhere(module_cls: type[nn.Module]) -> None:
    model = _randomise_bn(module_cls())
    x = torch.randn(1, 8, 12, 12)
    assert find_conv_bn_pairs(model, x) == []
    folded = fold_batchnorm(model, x)
    assert count_batchnorms(folded) == 1
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=0, atol=0)


def test_fold_keeps_activation_of_timm_batchnorm_act() -> None:
    from timm.layers import BatchNormAct2d

    model = _randomise_bn(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), BatchNormAct2d(8, act_layer=nn.ReLU)))
    x = torch.randn(1, 3, 15, 15)
    folded = fold_batchnorm(model, x)
    assert count_batchnorms(folded) == 0
    with torch.no_grad():
        out = folded(x)
        torch.testing.assert_close(out, model(x), rtol=0, atol=1e-5)
    assert out.min() >= 0  # the ReLU survived the folding


@pytest.fixture(scope="module")
def tiny_model() -> nn.Module:
    return _randomise_bn(helpers.tiny_model(num_classes=5))


@pytest.mark.parametrize("backend", ["eager", "onnxruntime"])
def test_optimized_model_matches_at_two_sizes(tiny_model: nn.Module, backend: str) -> None:
    example = torch.randn(1, 3, 64, 64)
    optimized = optimize_for_inference(tiny_model, example_input=example, backend=backend)
    assert optimized.backend == backend
    assert optimized.folded_batchnorms == count_batchnorms(tiny_model) > 0
    for shape in [(1, 3, 64, 64), (2, 3, 97, 131)]:
        x = torch.randn(shape)
        with torch.no_grad():
            expected = tiny_model(x)
        got = optimized(x)
        assert got.shape == expected.shape == (shape[0], 5, *shape[2:])
        assert (got - expected).abs().max().item() <= 1e-3


def test_auto_measures_onnxruntime_and_eager_on_cpu(tiny_model: nn.Module) -> None:
    x = torch.randn(1, 3, 64, 64)
    optimized = optimize_for_inference(tiny_model, example_input=x, warmup=0, trials=1)
    assert set(optimized.timings_ms) == {"onnxruntime", "eager"}  # conftest: ZOO_ENGINES leaves OpenVINO out
    assert optimized.backend == min(optimized.timings_ms, key=optimized.timings_ms.get)
    assert all(d <= 1e-3 for d in optimized.max_abs_diff.values())
    with torch.no_grad():
        assert (optimized(x) - tiny_model(x)).abs().max().item() <= 1e-3


def test_onnxruntime_shapes_beyond_max_sessions_share_one_dynamic_graph(tiny_model: nn.Module) -> None:
    runner = OnnxRuntimeRunner(
        fold_batchnorm(tiny_model, torch.randn(1, 3, 64, 64)), torch.randn(1, 3, 64, 64), max_sessions=1
    )
    for shape in [(1, 3, 64, 64), (1, 3, 96, 64), (2, 3, 57, 83), (1, 3, 128, 32)]:
        x = torch.randn(shape)
        with torch.no_grad():
            expected = tiny_model(x)
        assert (runner(x) - expected).abs().max().item() <= 1e-3
    assert list(runner.sessions) == [(1, 3, 64, 64)]
    assert runner.dynamic_ok is True and runner.dynamic_session is not None


def test_onnxruntime_dynamic_graph_returns_encoder_features() -> None:
    torch.manual_seed(0)
    encoder = _randomise_bn(zoo.build_encoder("xception65", output_stride=16, width=0.125))
    runner = OnnxRuntimeRunner(encoder, torch.randn(1, 3, 64, 64), max_sessions=1)
    for shape in [(1, 3, 96, 64), (2, 3, 57, 83)]:
        x = torch.randn(shape)
        with torch.no_grad():
            expected = encoder(x)
        got = runner(x)
        assert [g.shape for g in got] == [e.shape for e in expected]
        assert max((g - e).abs().max().item() for g, e in zip(got, expected, strict=True)) <= 1e-3
    assert runner.dynamic_ok is True and list(runner.sessions) == [(1, 3, 64, 64)]


def test_onnxruntime_falls_back_to_fixed_graphs(tiny_model: nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    export = onnx.onnx_bytes

    def no_dynamic(model, example_input, *, opset=17, dynamic=False):
        if dynamic:
            raise RuntimeError("dynamic export unsupported")
        return export(model, example_input, opset=opset)

    monkeypatch.setattr(onnx, "onnx_bytes", no_dynamic)
    runner = OnnxRuntimeRunner(tiny_model, torch.randn(1, 3, 64, 64), max_sessions=2)
    for shape in [(1, 3, 64, 64), (1, 3, 96, 64), (1, 3, 57, 83)]:
        x = torch.randn(shape)
        with torch.no_grad():
            assert (runner(x) - tiny_model(x)).abs().max().item() <= 1e-3
    assert runner.dynamic_ok is False
    assert list(runner.sessions) == [(1, 3, 96, 64), (1, 3, 57, 83)]  # least recently used dropped


def test_optimize_leaves_the_model_unchanged(tiny_model: nn.Module) -> None:
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    batchnorms = count_batchnorms(tiny_model)
    optimize_for_inference(tiny_model, example_input=torch.randn(1, 3, 64, 64), backend="eager")
    assert count_batchnorms(tiny_model) == batchnorms
    after = tiny_model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_optimized_encoder_returns_feature_list() -> None:
    torch.manual_seed(0)
    encoder = _randomise_bn(zoo.build_encoder("xception65", output_stride=16, width=0.125))
    x = torch.randn(1, 3, 64, 64)
    optimized = optimize_for_inference(encoder, example_input=x, backend="onnxruntime")
    with torch.no_grad():
        expected = encoder(x)
    got = optimized(x)
    assert isinstance(got, list) and len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape
        assert (g - e).abs().max().item() <= 1e-3


def test_optimize_bad_arguments(tiny_model: nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(ValueError, match="^backend: must be one of"):
        optimize_for_inference(tiny_model, example_input=x, backend="tensorrt")
    with pytest.raises(ValueError, match="^precision: must be one of"):
        optimize_for_inference(tiny_model, example_input=x, precision="int4")
    with pytest.raises(ValueError, match="^backend: 'onnxruntime' runs fp32 or int8 on the CPU only, not bf16 on cpu"):
        optimize_for_inference(tiny_model, example_input=x, backend="onnxruntime", precision="bf16")
    with pytest.raises(TypeError, match="example_input must be a tensor"):
        optimize_for_inference(tiny_model, example_input=x.numpy())


@pytest.mark.slow
def test_compiled_backend_matches() -> None:
    model = _randomise_bn(SeparableBnBoth())
    x = torch.randn(1, 8, 16, 16)
    optimized = optimize_for_inference(model, example_input=x, backend="compile")
    assert optimized.backend == "compile"
    with torch.no_grad():
        assert (optimized(x) - model(x)).abs().max().item() <= 1e-3
