"""``zoo benchmark`` runs on tiny models and its fields are sane (speed itself is never asserted)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import helpers
import pytest
import torch

import zoo
import zoo.benchmark as zb
from zoo.benchmark.candidates import Candidate
from zoo.cli import main
from zoo.cli.options import size
from zoo.flops import count_macs, count_params

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "--encoder-kwargs",
    '{"width": 0.125}',
    "--warmup",
    "1",
    "--repeats",
    "1",
    "--rounds",
    "2",
    "--num-classes",
    "5",
]


pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny_model(decoder: str | None) -> torch.nn.Module:
    if decoder is None:
        return zoo.build_encoder("xception65", output_stride=16, width=0.125)
    return helpers.tiny_model(decoder, num_classes=5)


def _check_timings(row: dict) -> None:
    assert float(row["latency_ms"]) > 0
    assert float(row["p90_ms"]) >= float(row["latency_ms"])
    assert float(row["peak_mem_mb"]) > 0
    assert int(row["rounds"]) == 2 and int(row["samples"]) == 2


@pytest.mark.slow
def test_cli_writes_sane_csv_json_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    csv_path, json_path, png_path, md_path = (tmp_path / n for n in ("b.csv", "b.json", "b.png", "b.md"))
    argv = ["benchmark", "--models", "xception65:deeplabv3plus", "xception65", "--size", "64", *TINY]
    argv += ["--csv", str(csv_path), "--json", str(json_path)]
    assert main(argv) == 0
    report = [sys.executable, str(REPO / "benchmarks" / "report.py"), str(json_path)]
    subprocess.run([*report, "--plot", str(png_path), "--markdown", str(md_path)], check=True, capture_output=True)
    assert "zoo benchmark on" in capsys.readouterr().out

    with csv_path.open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["model"], r["impl"], r["part"], r["size"]) for r in rows] == [
        ("xception65:deeplabv3plus", "zoo", "model", "64x64"),
        ("xception65", "zoo", "encoder", "64x64"),
    ]
    for row, decoder in zip(rows, ["deeplabv3plus", None], strict=True):
        model = _tiny_model(decoder)
        assert float(row["params_m"]) == pytest.approx(count_params(model) / 1e6, rel=1e-9)
        assert float(row["params_m"]) > 0
        assert float(row["gmacs"]) == pytest.approx(count_macs(model, torch.randn(1, 3, 64, 64)) / 1e9, rel=1e-9)
        assert row["error"] == ""
        _check_timings(row)

    payload = json.loads(json_path.read_text())
    assert payload["config"]["models"] == ["xception65:deeplabv3plus", "xception65"]
    assert [r["latency_ms"] for r in payload["rows"]] == [pytest.approx(float(r["latency_ms"])) for r in rows]
    assert "torch threads" in payload["machine"]
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert md_path.read_text().count("| xception65") == 2


def test_out_of_memory_is_reported_in_its_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_run = Candidate.run

    def run_or_oom(self: Candidate) -> None:
        if self.size == (96, 96):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
        real_run(self)

    monkeypatch.setattr(Candidate, "run", run_or_oom)
    csv_path = tmp_path / "b.csv"
    argv = ["benchmark", "--models", "xception65:deeplabv3plus", "--size", "64", "96", *TINY, "--csv", str(csv_path)]
    assert main(argv) == 0
    with csv_path.open() as f:
        rows = {r["size"]: r for r in csv.DictReader(f)}
    assert rows["96x96"]["error"] == "out of memory"
    assert rows["96x96"]["latency_ms"] == ""
    assert float(rows["96x96"]["params_m"]) > 0  # counted before the failing run
    assert rows["64x64"]["error"] == ""
    _check_timings(rows["64x64"])


def test_other_error_in_zoo_row_gives_exit_code_1(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def broken(self: Candidate) -> None:
        raise RuntimeError("shape mismatch somewhere\nsecond line")

    monkeypatch.setattr(Candidate, "run", broken)
    csv_path = tmp_path / "b.csv"
    assert main(["benchmark", "--models", "xception65", "--size", "64", *TINY, "--csv", str(csv_path)]) == 1
    with csv_path.open() as f:
        (row,) = list(csv.DictReader(f))
    assert row["error"] == "RuntimeError: shape mismatch somewhere"


def test_train_mode_times_a_full_step() -> None:
    config = zb.BenchmarkConfig(
        models=["xception65:deeplabv3plus"],
        sizes=[(64, 64)],
        batch_size=2,
        mode="train",
        warmup=1,
        repeats=1,
        rounds=2,
        num_classes=5,
        encoder_kwargs={"width": 0.125},
    )
    (row,) = zb.run_benchmark(config)
    assert row.error is None
    assert "backward" in row.timed and "SGD" in row.timed
    assert row.latency_ms > 0 and row.p90_ms >= row.latency_ms
    assert row.throughput == pytest.approx(2e3 / row.latency_ms)


def test_fast_path_row_is_compared_with_eager() -> None:
    config = zb.BenchmarkConfig(
        models=["xception65:deeplabv3plus"],
        sizes=[(64, 64)],
        fast=True,
        fast_backend="onnxruntime",
        warmup=1,
        repeats=1,
        rounds=2,
        num_classes=5,
        encoder_kwargs={"width": 0.125},
    )
    eager, fast = zb.run_benchmark(config)
    assert (eager.impl, fast.impl) == ("zoo", "zoo fast (onnxruntime)")
    assert fast.error is None and fast.latency_ms > 0
    assert fast.versus == "zoo" and fast.speedup > 0
    assert (fast.params_m, fast.gmacs) == (eager.params_m, eager.gmacs)


@pytest.mark.slow
def test_reference_peers_alternate_with_ours() -> None:
    config = zb.BenchmarkConfig(
        models=["resnet18:deeplabv3plus"], sizes=[(64, 64)], reference=True, warmup=1, repeats=1, rounds=2
    )
    rows = zb.run_benchmark(config)
    assert [(r.impl, r.part) for r in rows] == [
        ("zoo", "model"),
        ("smp", "model"),
        ("zoo", "encoder"),
        ("timm", "encoder"),
    ]
    assert all(r.error is None and r.rounds == 2 for r in rows)
    by_impl = {(r.impl, r.part): r for r in rows}
    assert by_impl["smp", "model"].speedup == pytest.approx(1.0)
    assert by_impl["zoo", "model"].versus == "smp" and by_impl["zoo", "model"].speedup > 0
    assert by_impl["zoo", "encoder"].versus == "timm" and by_impl["zoo", "encoder"].speedup > 0
    # the same smp encoder on both sides: parameters of the encoders agree
    assert by_impl["zoo", "encoder"].params_m == pytest.approx(by_impl["timm", "encoder"].params_m, rel=0.01)


def test_reference_peer_that_cannot_build_is_a_row_not_a_crash() -> None:
    config = zb.BenchmarkConfig(
        models=["resnet18:fcn"], sizes=[(64, 64)], reference=True, output_stride=32, warmup=1, repeats=1, rounds=1
    )
    rows = {(r.impl, r.part): r for r in zb.run_benchmark(config)}
    assert rows["smp", "model"].error == "ValueError: smp has no fcn decoder"
    assert rows["zoo", "model"].error is None and rows["zoo", "model"].versus is None
    assert rows["timm", "encoder"].error is None and rows["zoo", "encoder"].speedup > 0


def test_threads_argument_is_restored_after_the_run() -> None:
    before = torch.get_num_threads()
    config = zb.BenchmarkConfig(
        models=["xception65"],
        sizes=[(64, 64)],
        threads=2,
        warmup=0,
        repeats=1,
        rounds=1,
        encoder_kwargs={"width": 0.125},
    )
    (row,) = zb.run_benchmark(config)
    assert row.latency_ms > 0
    assert torch.get_num_threads() == before


def test_scaling_settings() -> None:
    config = zb.BenchmarkConfig(models=["xception65"], sizes=[(512, 1024)], output_stride=16, scaling=True)
    assert config.settings() == [
        ((256, 256), 16),
        ((384, 384), 16),
        ((512, 512), 16),
        ((768, 768), 16),
        ((1024, 1024), 16),
        ((512, 1024), 8),
        ((512, 1024), 16),
        ((512, 1024), 32),
    ]


@pytest.mark.parametrize(("text", "expected"), [("512", (512, 512)), ("512x1024", (512, 1024)), ("97X131", (97, 131))])
def test_parse_size(text: str, expected: tuple[int, int]) -> None:
    assert size(text) == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--models", "xception65", "--size", "0x5"], "--size: expected N or HxW with positive integers, got '0x5'"),
        (["--models", "xception65", "--device", "gpu"], "argument --device: 'gpu' is not a device; valid: cpu, cuda"),
        (["--models", "xception65:segformer"], "--models: unknown decoder 'segformer' in 'xception65:segformer'"),
        (["--models", "xception65:"], "--models: expected ENCODER or ENCODER:DECODER, got 'xception65:'"),
        (["--models", "no_such_encoder"], "--models: unknown encoder 'no_such_encoder'"),
        (["--models", "xception65", "--repeats", "0"], "argument --repeats: must be at least 1, got 0"),
        (["--models", "xception65", "--encoder-kwargs", "width"], "argument --encoder-kwargs: expected a JSON object"),
        (
            ["--models", "xception65", "--mode", "train", "--fast"],
            "argument --mode: the fast path (fast, precision 'int8') runs inference only: mode 'infer'",
        ),
    ],
)
def test_bad_arguments_exit_2_with_a_message(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    try:
        code = main(["benchmark", *argv])
    except SystemExit as stop:  # argparse's own refusal of a value
        code = stop.code
    assert code == 2
    assert message in capsys.readouterr().err
