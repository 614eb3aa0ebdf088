"""``zoo data``: write the synthetic shapes data (``make-shapes``), check a dataset on disk (``check``), count its
classes (``stats``) and turn colour masks into index masks (``convert-colour-masks``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from zoo.cli.options import examples


def add_arguments(data: argparse.ArgumentParser) -> None:
    """The ``zoo data`` subcommands: ``make-shapes``, ``check``, ``stats`` and ``convert-colour-masks``."""
    data.epilog = examples(
        "zoo data make-shapes --root data/shapes",
        "zoo data check --dataset voc --root VOCdevkit/VOC2012",
        "zoo data check --dataset folder --root my-data --mask-values 255:1",
        "zoo data stats --dataset folder --root my-data --split train",
    )
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
    _add_mask_options(check)
    _add_layout_options(check)
    check.set_defaults(data_func=run_check)

    stats = commands.add_parser("stats", help="per-class pixel and image frequencies, median-frequency weights")
    stats.add_argument("--dataset", required=True, help="dataset name: voc, cityscapes, folder, shapes")
    stats.add_argument("--root", type=Path, default=None, help="dataset folder")
    stats.add_argument("--split", default="train", help="split to count (default: %(default)s)")
    _add_mask_options(stats)
    stats.set_defaults(data_func=run_stats)

    colours = commands.add_parser("convert-colour-masks", help="RGB colour masks to index PNGs (palette PNGs)")
    colours.add_argument("--input", type=Path, required=True, help="folder of colour masks (PNG)")
    colours.add_argument("--output", type=Path, required=True, help="folder for the index masks (created)")
    colours.add_argument("--palette", required=True, help="voc, cityscapes, or a file of 'R G B' lines in class order")
    colours.add_argument("--unknown", type=int, default=None, help="index for colours not in the palette (e.g. 255)")
    colours.add_argument("--force", action="store_true", help="write into a non-empty --output")
    colours.set_defaults(data_func=run_convert_colours)


def _add_mask_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mask-values", type=_mapping, default=None, help="stored value -> class id, e.g. 255:1 (folder dataset)"
    )
    parser.add_argument("--reduce-zero-label", action="store_true", help="stored 0 is unlabelled (folder dataset)")


# folder layout options, as training's --data.dataset_kwargs.NAME (MMSegmentation's names)
LAYOUT_OPTIONS = {"img_dir": str, "ann_dir": str, "img_suffix": str, "seg_map_suffix": str, "ignore_index": int}


def _add_layout_options(parser: argparse.ArgumentParser) -> None:
    for name, kind in LAYOUT_OPTIONS.items():
        flag = "--" + name.replace("_", "-")
        parser.add_argument(
            flag, type=kind, default=None, help=f"folder dataset: {name} (--data.dataset_kwargs.{name})"
        )


def _mapping(text: str) -> dict[int, int]:
    try:
        return {int(k): int(v) for k, v in (pair.split(":") for pair in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SRC:DST[,SRC:DST...], got {text!r}") from None


def _mask_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if args.mask_values:
        kwargs["mask_values"] = args.mask_values
    if args.reduce_zero_label:
        kwargs["reduce_zero_label"] = True
    for name in LAYOUT_OPTIONS:
        if getattr(args, name, None) is not None:
            kwargs[name] = getattr(args, name)
    return kwargs


def run(args: argparse.Namespace) -> int:
    """Run the chosen ``zoo data`` subcommand; returns its exit code."""
    return args.data_func(args)


def run_make_shapes(args: argparse.Namespace) -> int:
    """Write the shapes data; returns the exit code."""
    from rich.console import Console

    from zoo.data.shapes import write_shapes

    root = write_shapes(args.root, num_train=args.num_train, num_val=args.num_val, seed=args.seed, force=args.force)
    Console().print(f"wrote {args.num_train} train + {args.num_val} val shapes images to {root} (VOC layout)")
    return 0


def run_check(args: argparse.Namespace) -> int:
    """Check a dataset on disk, print a summary; returns 1 if anything is wrong, else 0."""
    from rich.console import Console
    from rich.table import Table

    from zoo.data import DATASETS
    from zoo.data.check import binary_mask_values, check_split, convention_problems

    console = Console()
    cls = DATASETS.get(args.dataset)  # an unknown name: KeyError listing the valid ones
    kwargs: dict[str, Any] = {"root": args.root, **_mask_kwargs(args)}
    if args.sbd_root is not None:
        kwargs["sbd_root"] = args.sbd_root
    if args.root is None or not Path(args.root).is_dir():
        console.print(f"[red]--root: folder not found: {args.root}")
        return 1
    splits = args.split or cls.find_splits(**kwargs)
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
        value, target = binary_mask_values(dataset.num_classes, dataset.ignore_index)
        problems += [
            f"{label}: {p} (--mask-values {value}:{target})"
            for p in convention_problems(pixels, dataset.classes, dataset.ignore_index)
        ]
        total = sum(pixels.values())
        present = [dataset.classes[i] for i in sorted(pixels) if i < dataset.num_classes]
        ignore = f"{pixels.get(dataset.ignore_index, 0) / total:.1%}" if total else "-"
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


def run_stats(args: argparse.Namespace) -> int:
    """Print per-class pixel shares, image counts and median-frequency weights of one split."""
    from rich.console import Console
    from rich.table import Table

    from zoo.data import build_dataset
    from zoo.data.io import IGNORE_INDEX
    from zoo.data.stats import class_stats

    kwargs: dict[str, Any] = {"split": args.split, **_mask_kwargs(args)}
    if args.root is not None:
        kwargs["root"] = args.root
    dataset = build_dataset(args.dataset, **kwargs)
    stats = class_stats(dataset, len(dataset.classes), getattr(dataset, "ignore_index", IGNORE_INDEX))
    weights = stats.median_frequency_weights()
    table = Table(title=f"{args.dataset} {args.split}: {stats.num_images} images")
    for column in ("id", "class", "pixels", "share", "images", "weight"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for i, name in enumerate(dataset.classes):
        share = f"{stats.pixel_share[i]:.2%}"
        table.add_row(str(i), name, str(stats.pixels[i]), share, str(stats.images[i]), f"{weights[i]:.4f}")
    console = Console()
    console.print(table)
    console.print(f"ignored pixels: {stats.ignored}")
    console.print(f"class_weights: [{', '.join(f'{w:.4f}' for w in weights)}]  (or --model.class_weights auto)")
    return 0


def run_convert_colours(args: argparse.Namespace) -> int:
    """Write an index PNG for every colour PNG of ``--input``."""
    from zoo.data.colour import IGNORE_COLOURS, colour_to_index, named_palette
    from zoo.data.io import read_image, write_mask

    palette = named_palette(args.palette)
    sources = sorted(p for p in args.input.glob("*.png") if p.is_file()) if args.input.is_dir() else []
    if not sources:
        raise FileNotFoundError(f"--input {args.input}: no PNG masks there")
    if args.output.is_dir() and any(args.output.iterdir()) and not args.force:
        raise ValueError(f"--output {args.output} is not empty; pass --force to write into it")
    for path in sources:
        ignore = IGNORE_COLOURS.get(args.palette, [])
        index = colour_to_index(read_image(path), palette, args.unknown, str(path), ignore_colours=ignore)
        write_mask(args.output / path.name, index, palette)
    print(f"wrote {len(sources)} index masks ({len(palette)} classes) to {args.output}")
    return 0
