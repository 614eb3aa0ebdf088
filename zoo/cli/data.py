"""``zoo data``: write the synthetic shapes data (``make-shapes``) and check a dataset on disk (``check``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from zoo.data import DATASETS
from zoo.data.check import check_split
from zoo.data.shapes import write_shapes


def add_arguments(data: argparse.ArgumentParser) -> None:
    """The ``zoo data`` subcommands: ``make-shapes`` and ``check``."""
    commands = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)

    shapes = commands.add_parser("make-shapes", help="write the synthetic shapes data in Pascal VOC layout")
    shapes.add_argument("--root", type=Path, required=True, help="output folder: new, empty, or written by make-shapes")
    shapes.add_argument("--num-train", type=int, default=200, help="training images (default: %(default)s)")
    shapes.add_argument("--num-val", type=int, default=40, help="validation images (default: %(default)s)")
    shapes.add_argument("--seed", type=int, default=0, help="data seed (default: %(default)s)")
    shapes.add_argument(
        "--force", action="store_true", help="write into a non-empty folder the zoo did not write (replacing files)"
    )
    shapes.set_defaults(data_func=run_make_shapes)

    check = commands.add_parser(
        "check",
        help="count images per split and verify every image/mask pair (exit code 1 on problems)",
    )
    check.add_argument("--dataset", required=True, help="dataset name: voc, cityscapes, folder")
    check.add_argument("--root", type=Path, required=True, help="dataset folder")
    check.add_argument(
        "--split", action="append", help="split to check (repeatable; default: every split found under --root)"
    )
    check.add_argument("--sbd-root", type=Path, help="voc: SBD's dataset folder for the train_aug split")
    check.set_defaults(data_func=run_check)


def run(args: argparse.Namespace) -> int:
    """Run the chosen ``zoo data`` subcommand; returns its exit code."""
    return args.data_func(args)


def run_make_shapes(args: argparse.Namespace) -> int:
    """Write the shapes data; returns the exit code."""
    root = write_shapes(args.root, num_train=args.num_train, num_val=args.num_val, seed=args.seed, force=args.force)
    Console().print(f"wrote {args.num_train} train + {args.num_val} val shapes images to {root} (VOC layout)")
    return 0


def run_check(args: argparse.Namespace) -> int:
    """Check a dataset on disk, print a summary; returns 1 if anything is wrong, else 0."""
    console = Console()
    if args.dataset not in DATASETS:
        DATASETS.get(args.dataset)  # raises KeyError listing the valid names
    cls = DATASETS.get(args.dataset)
    kwargs: dict[str, Any] = {"root": args.root}
    if args.sbd_root is not None:
        kwargs["sbd_root"] = args.sbd_root
    if args.root is None or not Path(args.root).is_dir():
        console.print(f"[red]--root: folder not found: {args.root}")
        return 1
    splits = args.split or (cls.find_splits(**kwargs) if hasattr(cls, "find_splits") else [])
    if not splits:
        console.print(f"[red]{args.dataset}: no splits found under {args.root}")
        return 1

    table = Table(title=f"{args.dataset} at {args.root}")
    for column in ("split", "images", "problems", "classes present", "ignore pixels"):
        table.add_column(column, justify="left" if column in ("split", "classes present") else "right")
    problems: list[str] = []
    for split in splits:
        label = "all" if split is None else split
        try:
            dataset = cls(split=split, **kwargs)
        except (OSError, ValueError) as exc:
            problems.append(f"{label}: {exc}")
            table.add_row(label, "-", "1", "-", "-")
            continue
        count, pixels, split_problems = check_split(dataset)
        problems += [f"{label}: {p}" for p in split_problems]
        total = sum(pixels.values())
        present = [dataset.classes[i] for i in sorted(pixels) if i < dataset.num_classes]
        ignore = f"{pixels.get(255, 0) / total:.1%}" if total else "-"
        shown = ", ".join(present[:8]) + (
            f", ... ({len(present)} of {dataset.num_classes})" if len(present) > 8 else ""
        )
        table.add_row(label, str(count), str(len(split_problems)), shown or "-", ignore)
    console.print(table)
    for problem in problems:
        console.print(f"[red]problem:[/red] {problem}", soft_wrap=True)
    if problems:
        console.print(f"[red]{len(problems)} problem(s) found")
        return 1
    console.print("[green]ok")
    return 0
