"""Graph-level rewrites of the fast path: the input normalisation folded into the first convolution (exact, border
pixels included), and the per-operator split's buckets."""

from __future__ import annotations

import helpers
import pytest
import torch

import zoo
from zoo.benchmark.operators import BUCKETS, bucket_of, encoder_units, markdown_split
from zoo.infer.fold import InputFoldedModel, fold_input_normalisation
from zoo.infer.predictor import class_map

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(monkeypatch: pytest.MonkeyPatch, semantics: str = "zoo", **kwargs) -> torch.nn.Module:
    """A shallow model (five conv stages), so that the first convolution's border shows in the logits."""
    kwargs = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.5, 0.2), **kwargs}
    torch.manual_seed(0)
    encoder = helpers.register_tiny_encoder(monkeypatch)
    model = zoo.build_model(encoder, "deeplabv3plus", num_classes=4, semantics=semantics, **kwargs)
    model.load_state_dict(helpers.randomise(model.state_dict()))
    return model.eval()


@pytest.mark.parametrize("semantics", ["zoo", "deeplab-tf"])
@pytest.mark.parametrize("size", [(64, 64), (65, 91), (33, 47)])
def test_folded_normalisation_equals_the_model(
    monkeypatch: pytest.MonkeyPatch, semantics: str, size: tuple[int, int]
) -> None:
    model = _model(monkeypatch, semantics)
    folded = fold_input_normalisation(model, torch.rand(1, 3, 64, 64))
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = model(x), folded(x)
    assert got.shape == expected.shape
    assert helpers.max_rel_diff(got, expected) < 1e-5
    assert folded.model.encoder.stages[0][0].padding == (0, 0)  # the pad with the mean colour replaced its own


def test_folded_normalisation_equals_xception() -> None:
    model = helpers.tiny_model(num_classes=4)
    model.load_state_dict(helpers.randomise(model.state_dict()))
    model.eval()
    folded = fold_input_normalisation(model, torch.rand(1, 3, 64, 64))
    assert folded.first_conv == "stem.conv1" and folded.padding == (1, 1)
    x = torch.rand(1, 3, 65, 47, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert helpers.max_rel_diff(folded(x), model(x)) < 1e-5


def test_folding_with_zero_padding_would_change_the_border(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fold is exact only because the pad is the mean colour: the same fold padding with zeros differs at the
    border (so the equality test above can fail)."""
    model = _model(monkeypatch)
    folded = fold_input_normalisation(model, torch.rand(1, 3, 64, 64))
    naive = InputFoldedModel(folded.model, folded.first_conv, folded.padding)
    naive.value = 0.0
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert helpers.max_rel_diff(naive(x), model(x)) > 1e-4


def test_fold_refuses_where_it_would_not_be_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    imagenet = _model(monkeypatch, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    with pytest.raises(ValueError, match="mean differs between channels"):
        fold_input_normalisation(imagenet, torch.rand(1, 3, 64, 64))
    tf_same = zoo.build_model("mobilenetv2", "deeplabv3", num_classes=3, semantics="deeplab-tf").eval()
    with pytest.raises(ValueError, match="does not read the normalised input"):
        fold_input_normalisation(tf_same, torch.rand(1, 3, 33, 33))
    with pytest.raises(ValueError, match="must be a SegmentationModel"):
        fold_input_normalisation(torch.nn.Conv2d(3, 3, 3), torch.rand(1, 3, 8, 8))


def test_fold_leaves_the_model_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model(monkeypatch)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fold_input_normalisation(model, torch.rand(1, 3, 64, 64))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_operator_buckets_follow_the_module_paths() -> None:
    model = zoo.build_model("xception65", "deeplabv3plus", num_classes=3, encoder_kwargs={"width": 0.125}).eval()
    units, taps = encoder_units(model)
    assert taps == [0, 1, 2, 19]
    assert [units[i].flow for i in (0, 2, 3, 18, 19, 20)] == ["entry", "entry", "middle", "middle", "exit", "exit"]
    assert units[20].dilated and not units[19].dilated  # OS16: only the last unit runs dilated

    def bucket(name: str, node_type: str = "Convolution") -> str:
        return bucket_of(name, node_type, units, taps)

    assert bucket("/module/encoder/blocks.7/convs.1/conv_dw/Conv/WithoutBiases", "GroupConvolution") == BUCKETS[3]
    assert bucket("/module/encoder/blocks.20/convs.1/conv_dw/Conv/WithoutBiases", "GroupConvolution") == BUCKETS[2]
    assert bucket("/module/encoder/blocks.7/convs.1/conv_pw/Conv/WithoutBiases") == BUCKETS[4]
    assert bucket("/module/encoder/blocks.7/Relu", "Relu") == BUCKETS[5]
    # the tapped units lose their blocks.N scope: numbered in call order (units 0, 1, 2, 19)
    assert bucket("/module/encoder/convs.1/conv_pw_2/Conv/WithoutBiases") == BUCKETS[1]
    assert bucket("/module/encoder/convs.2/conv_pw_3/Conv/WithoutBiases") == BUCKETS[4]
    assert bucket("/module/encoder/Relu_10", "Relu") == BUCKETS[5]
    assert bucket("/module/encoder/stem/conv1/Conv/WithoutBiases") == BUCKETS[1]
    assert bucket("/module/decoder/aspp/branches.1/depthwise/conv/Conv/WithoutBiases") == BUCKETS[6]
    assert bucket("/module/decoder/refine/refine.0/pointwise/conv/Conv/WithoutBiases") == BUCKETS[7]
    assert bucket("/module/Resize", "Interpolate") == BUCKETS[8]
    assert bucket("output_0_acdb_abcd_output_0/sink_port_0", "Reorder") == BUCKETS[8]
    assert bucket("Multiply_9533", "MulAdd") == BUCKETS[0]
    assert bucket("/module/Pad", "Pad") == BUCKETS[0]
    assert bucket("Gather_8974", "Gather") == BUCKETS[9]


def test_split_table_gives_shares_of_each_column() -> None:
    table = markdown_split({"a": {"x": 30.0, "y": 10.0}, "b": {"x": 5.0, "y": 15.0}}, {"a": 41.0, "b": 19.0})
    assert "| x | 30.0 | 75.0% | 5.0 | 25.0% |" in table
    assert "| **sum of the nodes + argmax** | 40.0 | 100% | 20.0 | 100% |" in table


def test_class_map_equals_torch_argmax_ties_and_strides_included() -> None:
    ties = torch.randint(0, 3, (2, 7, 9, 11), generator=torch.Generator().manual_seed(0)).float()
    for logits in (ties, ties[..., 1:8, 2:9], torch.randn(1, 21, 17, 13).to(torch.bfloat16)):
        got = class_map(logits)
        assert got.shape == logits.shape[:1] + logits.shape[2:]
        assert (got == logits.float().argmax(1).numpy()).all()
