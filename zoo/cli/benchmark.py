"""``zoo benchmark``: time encoders and models, optionally against smp and timm (see :mod:`zoo.benchmark`).

Plots and markdown tables of a ``--json`` result: ``python benchmarks/report.py FILE.json --plot ... --markdown ...``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from zoo.cli.options import BACKENDS, add_device_argument, add_precision_arguments, encoder_kwargs, examples, size

if TYPE_CHECKING:
    from zoo.benchmark import BenchmarkConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``zoo benchmark``."""
    p.description = "Time encoders (ENCODER) and models (ENCODER:DECODER), optionally against smp and timm."
    p.epilog = examples(
        "zoo benchmark --models xception65:deeplabv3plus --size 512 --reference",
        "zoo benchmark --models xception65:deeplabv3plus --size 512x1024 --fast --precision int8",
        "zoo benchmark --models xception65:deeplabv3plus --size 512 --threads 2 --engines",
        "zoo benchmark --models xception65 --scaling --encoder-kwargs '{\"width\": 0.5}' --json scaling.json",
    )
    p.add_argument("--models", nargs="+", required=True, metavar="SPEC", help="e.g. xception65:deeplabv3plus resnet50")
    p.add_argument(
        "--size", dest="sizes", type=size, nargs="+", default=[(512, 512)], metavar="HxW", help="N or HxW (default 512)"
    )
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--output-stride", type=int, default=16, choices=(8, 16, 32))
    p.add_argument("--mode", choices=("infer", "train"), default="infer")
    add_device_argument(p)
    add_precision_arguments(
        p,
        help_text="bf16/fp16: torch.autocast for every candidate; int8: the fast path quantized (implies --fast, "
        "CPU), the others fp32; --calibration defaults to random images",
    )
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile every candidate")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode (e.g. max-autotune)")
    p.add_argument("--fast", action="store_true", help="add the zoo's fast inference path (optimize_for_inference)")
    p.add_argument(
        "--fast-backend", choices=BACKENDS, default="auto", help="the fast path's engine (auto: the fastest measured)"
    )
    p.add_argument("--reference", action="store_true", help="time smp's model and timm's encoder alongside")
    p.add_argument(
        "--engines",
        action="store_true",
        help="the engines table of the first model and size: every engine and precision this CPU offers, as a "
        "speed-up over smp eager fp32 (markdown)",
    )
    p.add_argument("--scaling", action="store_true", help="sweep input sizes 256..1024 and output strides 8/16/32")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs per candidate (default 2)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per candidate per round (default 3)")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    p.add_argument("--num-classes", type=int, default=21)
    p.add_argument(
        "--encoder-kwargs", nargs="+", default=[], help="a JSON object for the zoo's encoders, e.g. '{\"width\": 0.25}'"
    )
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (torch and ONNX Runtime)")
    p.add_argument("--csv", type=Path, default=None, metavar="FILE")
    p.add_argument("--json", type=Path, default=None, metavar="FILE")


def config_from_args(args: argparse.Namespace) -> BenchmarkConfig:
    """A :class:`zoo.benchmark.BenchmarkConfig` from parsed ``zoo benchmark`` arguments."""
    from zoo.benchmark import BenchmarkConfig

    return BenchmarkConfig(
        models=list(args.models),
        sizes=list(args.sizes),
        batch_size=args.batch_size,
        output_stride=args.output_stride,
        mode=args.mode,
        device=args.device,
        precision=args.precision,
        channels_last=args.channels_last,
        compile=args.compile,
        compile_mode=args.compile_mode,
        fast=args.fast,
        fast_backend=args.fast_backend,
        reference=args.reference,
        scaling=args.scaling,
        warmup=args.warmup,
        repeats=args.repeats,
        rounds=args.rounds,
        num_classes=args.num_classes,
        encoder_kwargs=encoder_kwargs(args.encoder_kwargs),
        threads=args.threads,
        calibration=str(args.calibration) if args.calibration else None,
    )


def run(args: argparse.Namespace) -> int:
    """``zoo benchmark``: exit code 0, 1 when a zoo row failed for a reason other than memory, 2 for bad input."""
    import torch

    from zoo.benchmark import machine_description, memory_kind, print_table, run_benchmark, write_csv, write_json

    config = config_from_args(args)
    if args.engines:
        return _run_engines(config)
    rows = run_benchmark(config, progress=lambda line: print(line, file=sys.stderr, flush=True))
    machine = machine_description(config.device, config.threads)
    print_table(rows, title=f"zoo benchmark on {machine} (peak memory: {memory_kind(torch.device(config.device))})")
    if args.csv:
        print(f"wrote {write_csv(rows, args.csv)}")
    if args.json:
        print(f"wrote {write_json(rows, args.json, config)}")
    failed = [r for r in rows if r.impl.startswith("zoo") and r.error and r.error != "out of memory"]
    return 1 if failed else 0


def _run_engines(config: BenchmarkConfig) -> int:
    """``zoo benchmark --engines``: the markdown table, titled with the machine and the setting."""
    from zoo.benchmark import machine_description
    from zoo.benchmark.engines import markdown_table, run_engines

    rows = run_engines(config, progress=lambda line: print(line, file=sys.stderr, flush=True))
    (h, w), model = config.sizes[0], config.models[0]
    print(
        f"engines on {machine_description(config.device, config.threads)}: {model} OS{config.output_stride} "
        f"{h}x{w} batch {config.batch_size}, {config.rounds} alternating rounds of {config.repeats}\n"
    )
    print(markdown_table(rows))
    return 0 if any(r.latency_ms is not None for r in rows) else 1
