"""Markdown tables and plots of ``zoo benchmark --json`` results (what BENCHMARKS.md and benchmarks/results hold).

python benchmarks/report.py RESULTS.json [--markdown FILE.md] [--plot FILE.png]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from zoo.benchmark import BenchmarkRow, table_cells  # noqa: E402
from zoo.benchmark.report import TABLE_COLUMNS  # noqa: E402


def plot_rows(rows: Sequence[BenchmarkRow], path: str | Path) -> Path:
    """Latency against GMACs and against parameters (plus, with several sizes, latency and memory against size)."""
    done = [r for r in rows if r.latency_ms is not None]
    sizes = {r.size for r in done}
    panels = 4 if len(sizes) > 1 else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.8))
    groups: dict[str, list[BenchmarkRow]] = {}
    for row in done:
        groups.setdefault(f"{row.model} {row.impl} ({row.part})", []).append(row)
    ylabel = f"{'train step' if done and done[0].mode == 'train' else 'latency'} median (ms)"
    for key, ax, xlabel in (("gmacs", axes[0], "GMACs per image"), ("params_m", axes[1], "parameters (M)")):
        for label, items in groups.items():
            ax.scatter([getattr(r, key) for r in items], [r.latency_ms for r in items], s=30, label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    if panels == 4:
        series: dict[str, list[BenchmarkRow]] = {}
        for row in done:
            series.setdefault(f"{row.model} {row.impl} {row.part} OS{row.output_stride}", []).append(row)
        for label, items in series.items():
            items.sort(key=lambda r: _pixels(r.size))
            pixels = [_pixels(r.size) / 1e6 for r in items]
            axes[2].plot(pixels, [r.latency_ms for r in items], marker="o", label=label)
            axes[3].plot(pixels, [r.peak_mem_mb for r in items], marker="o", label=label)
        for ax, ylabel in ((axes[2], "latency median (ms)"), (axes[3], "peak memory (MB)")):
            ax.set_xlabel("input megapixels")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6)
    fig.suptitle(f"zoo benchmark ({done[0].device if done else ''})", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _pixels(size: str) -> int:
    h, w = size.split("x")
    return int(h) * int(w)


def markdown_table(rows: Sequence[BenchmarkRow]) -> str:
    """``rows`` as a GitHub markdown table (what BENCHMARKS.md holds)."""
    lines = ["| " + " | ".join(h for h, _ in TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(table_cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def read_rows(path: Path) -> tuple[str, list[BenchmarkRow]]:
    """The machine line and the rows of a ``zoo benchmark --json`` file."""
    payload = json.loads(path.read_text())
    return payload["machine"], [BenchmarkRow(**row) for row in payload["rows"]]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, help="a file written by zoo benchmark --json")
    parser.add_argument("--markdown", type=Path, help="write the table as markdown")
    parser.add_argument("--plot", type=Path, help="write latency against GMACs and parameters as PNG")
    args = parser.parse_args(argv)
    machine, rows = read_rows(args.json)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(f"Machine: {machine}\n\n{markdown_table(rows)}\n")
        print(f"wrote {args.markdown}")
    if args.plot:
        print(f"wrote {plot_rows(rows, args.plot)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
