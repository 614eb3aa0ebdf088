"""``zoo summary``: encoder and model tables, counted on the meta device equal to counts on real tensors."""

from __future__ import annotations

import helpers
import pytest
import torch
from helpers import TinyEncoder

from zoo import summary
from zoo.cli import main
from zoo.flops import count_macs, count_params
from zoo.models import build_model
from zoo.summary import summarize


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one thread is faster than two contended ones on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny(monkeypatch):
    return helpers.register_tiny_encoder(monkeypatch)


def zoo_summary(argv: list[str]) -> int:
    return main(["summary", *argv])


def markdown_rows(text: str) -> list[list[str]]:
    lines = [line for line in text.strip().splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_models_markdown_table(tiny, capsys):
    assert zoo_summary(["models", "--encoders", tiny, "--size", "64x96", "--num-classes", "5", "--markdown"]) == 0
    rows = markdown_rows(capsys.readouterr().out)
    assert rows[0] == ["Encoder", "Decoder", "OS", "Params (M)", "GMACs"]
    assert rows[1] == ["---", "---", "---", "---:", "---:"]
    assert [r[1] for r in rows[2:]] == ["deeplabv3", "deeplabv3plus", "dpc", "fcn", "lraspp", "unet"]
    for row in rows[2:]:
        model = build_model(tiny, row[1], num_classes=5, output_stride=16)
        assert row[:3] == [tiny, row[1], "16"]
        assert row[3] == f"{count_params(model) / 1e6:.2f}"
        # counted on the meta device; the same count on real tensors
        assert row[4] == f"{count_macs(model, torch.zeros(1, 3, 64, 96)) / 1e9:.2f}"


def test_encoders_exact_counts(tiny):
    (row,) = summary.encoder_rows([tiny], (64, 64), 8, {})
    encoder = TinyEncoder(8)
    assert row.cells == (tiny, "2/4/8/8/8", "12")
    assert row.params == count_params(encoder)
    assert row.macs == count_macs(encoder, torch.zeros(1, 3, 64, 64)) > 0
    (model_row,) = summary.model_rows([tiny], ["deeplabv3plus"], (64, 64), 16, 21, {})
    model = build_model(tiny, "deeplabv3plus", num_classes=21)
    assert model_row.macs == count_macs(model, torch.zeros(1, 3, 64, 64))


def test_rich_table(tiny, capsys):
    assert zoo_summary(["encoders", "--encoders", tiny, "--size", "64"]) == 0
    out = capsys.readouterr().out
    assert "Encoders at 64x64, output stride 32" in out and tiny in out and "2/4/8/16/32" in out


def test_bad_input(tiny, capsys):
    assert zoo_summary(["models", "--encoders", "no-such-encoder", "--decoders", "fcn", "--size", "64"]) == 2
    assert "zoo summary: error: unknown encoder 'no-such-encoder'" in capsys.readouterr().err
    assert zoo_summary(["models", "--encoders", tiny, "--decoders", "nope", "--size", "64"]) == 2
    err = capsys.readouterr().err
    assert "unknown decoder 'nope'; valid names: deeplabv3, deeplabv3plus, dpc, fcn, lraspp, unet" in err
    with pytest.raises(SystemExit):
        zoo_summary(["models", "--size", "64x"])
    assert "argument --size: expected N or HxW with positive integers, got '64x'" in capsys.readouterr().err
    assert zoo_summary(["encoders", "--encoder-kwargs", "{1}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("zoo summary: error: argument --encoder-kwargs: not a JSON object (Expecting property name")


def test_encoder_kwargs_one_format_and_the_old_one_deprecated(tiny, capsys):
    assert (
        zoo_summary(["encoders", "--encoders", "xception65", "--size", "64", "--encoder-kwargs", '{"width": 0.125}'])
        == 0
    )
    json_table = capsys.readouterr()
    assert zoo_summary(["encoders", "--encoders", "xception65", "--size", "64", "--encoder-kwargs", "width=0.125"]) == 0
    old_table = capsys.readouterr()
    assert old_table.out == json_table.out and "0.01" in json_table.out
    assert old_table.err.strip() == (
        "zoo summary: warning: --encoder-kwargs KEY=VALUE is deprecated; write a JSON object: '{\"width\": 0.125}'"
    )
    assert zoo_summary(["encoders", "--encoders", "xception65", "--size", "64", "--encoder-kwargs", "width"]) == 2
    assert "argument --encoder-kwargs: expected a JSON object such as" in capsys.readouterr().err


def test_summarize_takes_python_arguments(tiny, capsys):
    summarize("models", size=(64, 64), encoders=[tiny], decoders=["fcn"], num_classes=4, markdown=True)
    assert capsys.readouterr().out.startswith("| Encoder | Decoder | OS | Params (M) | GMACs |")
    with pytest.raises(ValueError, match="^num_classes: must be positive, got 0$"):
        summarize("models", num_classes=0)
