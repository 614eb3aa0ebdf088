"""``--devices N`` and its companions: ``zoo predict`` and ``zoo eval`` through Lightning (:mod:`zoo.infer.batch`).

Without ``--devices`` both commands run in one process as before. With it, they run on Lightning's Trainer: its
DDP launcher starts the other local processes; under ``torchrun`` or SLURM's ``srun`` every task runs the
command itself and Lightning reads the cluster's environment.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zoo.infer.predictor import Predictor


def add_scale_arguments(parser: argparse.ArgumentParser, *, resumable: bool = False) -> None:
    """The Lightning options; ``resumable`` adds ``--skip-existing/--overwrite`` (``zoo predict``)."""
    group = parser.add_argument_group("many processes and machines (Lightning Trainer)")
    group.add_argument(
        "--devices", type=int, default=None, help="processes per machine through Lightning (default: one, no Trainer)"
    )
    group.add_argument("--accelerator", choices=("cpu", "gpu", "auto"), default="cpu", help="with --devices")
    group.add_argument(
        "--strategy",
        choices=("auto", "ddp"),
        default="auto",
        help="with --devices: ddp (one process per device; torchrun/srun tasks are picked up)",
    )
    group.add_argument("--num-nodes", type=int, default=1, help="with --devices: machines in the run")
    group.add_argument("--num-workers", type=int, default=0, help="with --devices: DataLoader workers that decode")
    if resumable:
        group.add_argument(
            "--skip-existing",
            dest="overwrite",
            action="store_false",
            default=False,
            help="with --devices: leave images whose pred/ and vis/ exist (the default; a killed run resumes)",
        )
        group.add_argument(
            "--overwrite", dest="overwrite", action="store_true", help="with --devices: redo every image"
        )


def trainer_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``pytorch_lightning.Trainer`` arguments of the parsed flags."""
    if args.devices < 1 or args.num_nodes < 1 or args.num_workers < 0:
        raise ValueError("--devices and --num-nodes must be positive, --num-workers at least 0")
    fast = getattr(args, "fast", False) or getattr(args, "precision", "fp32") != "fp32"
    onnx = getattr(args, "backend", None) == "onnx" or getattr(args, "onnx", None) is not None
    if args.accelerator != "cpu" and (fast or onnx):
        raise ValueError("--fast, --precision and --onnx run on the CPU: use --accelerator cpu with --devices")
    return {
        "accelerator": args.accelerator,
        "devices": args.devices,
        "strategy": args.strategy,
        "num_nodes": args.num_nodes,
    }


def run_predict(
    args: argparse.Namespace,
    predictor: Predictor,
    palette: Sequence[Sequence[int]],
    render: Callable[[Any, Any], Any],
    naming: Callable[[Sequence[Path]], list[str]],
) -> int:
    """``zoo predict --devices N``: exit code 0, or 1 when some images could not be read (listed in summary.json).

    Every process of the run returns here; global rank 0 reports and gives the exit code.
    """
    from zoo.infer.batch import predict_to_folder

    summary = predict_to_folder(
        predictor,
        args.input,
        args.output,
        palette=palette,
        render=render,
        naming=naming,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        overwrite=args.overwrite,
        trainer_kwargs=trainer_options(args),
    )
    if summary is None:  # not global rank 0: that process reports
        return 0
    if summary["failed"]:
        print(f"{summary['failed']} images could not be read: see {args.output / 'summary.json'}", file=sys.stderr)
    print(
        f"{summary['written']} images written, {summary['skipped']} skipped (done before), {summary['failed']} "
        f"failed, {summary['seconds']:.2f} s, {summary['images_per_second']:.2f} images/s over "
        f"{summary['processes']} processes -> {args.output}"
    )
    return 1 if summary["failed"] else 0


def run_eval(args: argparse.Namespace, predictor: Predictor, dataset: Any, show: Callable | None) -> Any:
    """``zoo eval --devices N``: the scores in global rank 0, None in the other processes."""
    if args.precision != "fp32":
        raise ValueError(f"--precision {args.precision} and its accuracy report run in one process: drop --devices")
    options = trainer_options(args)
    from zoo.infer.batch import evaluate_distributed

    return evaluate_distributed(predictor, dataset, num_workers=args.num_workers, show=show, trainer_kwargs=options)
