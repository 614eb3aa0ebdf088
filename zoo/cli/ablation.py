"""``zoo ablation``: every variant × seed of a study with the same data and budget (see :mod:`zoo.train.ablation`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from zoo.cli.options import examples


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``zoo ablation``."""
    parser.description = (
        "Train every variant × seed of a study through the Lightning module, resumably (the same command continues a "
        "stopped study); write results.csv (variant, seed, step, val mIoU, train loss, params, MACs, step time), "
        "miou_vs_steps.png and miou_vs_cost.png, and print the table."
    )
    parser.add_argument(
        "--study", type=Path, required=True, help="study YAML, e.g. configs/studies/xception-paper.yaml"
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="zoo train config: its data replaces the study's, model and trainer merge",
    )
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default: the study's)")
    parser.add_argument("--seeds", type=int, default=None, help="runs per variant, seeds 0..K-1 (default: the study's)")
    parser.add_argument("--output", type=Path, default=None, help="study folder (default: runs/ablation/<study>)")
    parser.add_argument("--force", action="store_true", help="use a non-empty --output that holds something else")
    parser.epilog = examples(
        "OMP_NUM_THREADS=1 zoo ablation --study configs/studies/xception-paper.yaml",
        "zoo ablation --study configs/studies/inception-vs-xception.yaml --seeds 5 --steps 1000 --config my-data.yaml",
    )


def run(args: argparse.Namespace) -> int:
    """Run or resume the study; 0 when every run finished, 143 when stopped by SIGTERM (run it again to resume)."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from zoo.train.ablation import load_study, markdown_table, run_study, summarize

    study = load_study(args.study, config=args.config, steps=args.steps, seeds=args.seeds)
    output = args.output or Path("runs") / "ablation" / study.name
    try:
        rows = run_study(study, output, force=args.force)
    except SIGTERMException:
        print(f"stopped by SIGTERM; the same command resumes the study in {output}")
        return 143
    print(markdown_table(summarize(rows)))
    print(f"results: {output / 'results.csv'}; plots: {output / 'miou_vs_steps.png'}, {output / 'miou_vs_cost.png'}")
    return 0
