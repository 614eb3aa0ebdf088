"""Benchmarks (``zoo benchmark``): parameters, multiply-adds, latency, throughput and memory of encoders and models.

Each setting (model, input size, output stride) is one group of candidates timed in alternating rounds:
round 1 runs the zoo model, then its fast path (``fast``), then the peers (``reference``: smp's model
of the same architecture and timm's ``features_only`` encoder), round 2 again in the same order, and so
on; in every round each candidate runs once untimed before its timed runs. Latency is the median (and 90th
percentile) over all timed runs; the speed-up against the peer is the median over rounds of the per-round
ratio, so slow phases of a shared machine hit both sides alike.

Python API::

    rows = run_benchmark(BenchmarkConfig(models=["xception65:deeplabv3plus"], sizes=[(512, 512)], reference=True))
    print_table(rows); write_csv(rows, "b.csv"); write_json(rows, "b.json")

Plots and markdown tables of saved JSON results are drawn by ``benchmarks/report.py``.
"""

from zoo.benchmark.config import (
    BenchmarkConfig,
    BenchmarkError,
    BenchmarkRow,
    parse_model_spec,
)
from zoo.benchmark.measure import memory_kind, run_benchmark
from zoo.benchmark.report import machine_description, print_table, table_cells, write_csv, write_json

__all__ = [
    "BenchmarkConfig",
    "BenchmarkError",
    "BenchmarkRow",
    "machine_description",
    "memory_kind",
    "parse_model_spec",
    "print_table",
    "run_benchmark",
    "table_cells",
    "write_csv",
    "write_json",
]
