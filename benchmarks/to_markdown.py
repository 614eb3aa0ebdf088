"""Print the markdown table of one or more ``zoo benchmark --json`` files (what BENCHMARKS.md holds).

Usage: python benchmarks/to_markdown.py benchmarks/results/gpu_train_b8.json [...]
"""

from __future__ import annotations

import json
import sys

from zoo.benchmark import BenchmarkRow, markdown_table


def main(paths: list[str]) -> None:
    for path in paths:
        payload = json.loads(open(path).read())
        rows = [BenchmarkRow(**row) for row in payload["rows"]]
        print(f"Machine: {payload['machine']}\n\n{markdown_table(rows)}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
