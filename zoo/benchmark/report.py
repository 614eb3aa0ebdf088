"""``zoo benchmark`` output: the machine's description, a rich table, CSV and JSON."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from zoo.benchmark.config import BenchmarkConfig, BenchmarkRow


def machine_description(device: str | torch.device = "cpu", threads: int | None = None) -> str:
    """CPU model and thread count, or the GPU's name as ``torch.cuda.get_device_name`` reports it.

    Args:
        device: the device measured.
        threads: the intra-op threads used (default: ``torch.get_num_threads()``).
    """
    device = torch.device(device)
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    threads = threads or torch.get_num_threads()
    return f"{cpu}, {os.cpu_count()} logical cores, {threads} torch threads, torch {torch.__version__}"


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


TABLE_COLUMNS = (
    ("model", "model"),
    ("impl", "impl"),
    ("part", "part"),
    ("size", "size"),
    ("batch", "batch_size"),
    ("OS", "output_stride"),
    ("params (M)", "params_m"),
    ("GMACs/img", "gmacs"),
    ("median ms", "latency_ms"),
    ("p90 ms", "p90_ms"),
    ("img/s", "throughput"),
    ("peak MB", "peak_mem_mb"),
    ("speed-up", "speedup"),
    ("note", "error"),
)


def table_cells(row: BenchmarkRow) -> list[str]:
    """The row as the strings of :data:`TABLE_COLUMNS`."""
    cells = []
    for _, key in TABLE_COLUMNS:
        value = getattr(row, key)
        if key == "speedup":
            cells.append("-" if value is None else f"{value:.2f}x vs {row.versus}")
        elif key == "throughput":
            cells.append(_fmt(value, 2))
        elif key in ("params_m", "gmacs", "latency_ms", "p90_ms", "peak_mem_mb"):
            cells.append(_fmt(value, 1 if key != "params_m" else 2))
        elif key == "error":
            cells.append(value or "")
        else:
            cells.append(str(value))
    return cells


def print_table(rows: Sequence[BenchmarkRow], *, title: str | None = None, file=None) -> None:
    """A rich table of ``rows`` on the terminal (or ``file``)."""
    table = Table(title=title)
    for header, key in TABLE_COLUMNS:
        table.add_column(header, justify="left" if key in ("model", "impl", "part", "size", "error") else "right")
    for row in rows:
        table.add_row(*table_cells(row))
    Console(file=file, width=200).print(table)


def write_csv(rows: Sequence[BenchmarkRow], path: str | Path) -> Path:
    """Write ``rows`` as CSV (one column per :class:`BenchmarkRow` field)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [f.name for f in dataclasses.fields(BenchmarkRow)]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        for row in rows:
            writer.writerow(dataclasses.asdict(row))
    return path


def write_json(rows: Sequence[BenchmarkRow], path: str | Path, config: BenchmarkConfig | None = None) -> Path:
    """Write ``{"machine", "config", "rows"}`` as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": machine_description(config.device, config.threads) if config else machine_description(),
        "config": dataclasses.asdict(config) if config else None,
        "rows": [dataclasses.asdict(r) for r in rows],
    }
    path.write_text(json.dumps(payload, indent=2))
    return path
