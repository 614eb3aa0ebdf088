"""Ablation studies: every variant of a study trained with the same data, budget and seeds (``zoo ablation``).

A study file (``configs/studies/*.yaml``) holds a training config (the ``model``, ``data`` and ``trainer`` sections
of ``zoo train fit``), the variants (each one more config layer over it), the budget, and optionally the panels of
its figure::

    description: what the study reproduces
    steps: 300          # optimizer steps per run (a multiple of val_every)
    seeds: 2            # runs per variant, seeds 0 .. seeds-1
    val_every: 50       # validation and checkpoint interval, in steps
    config: {model: {...}, data: {...}, trainer: {...}}
    variants:
      published: {}
      no-residual: {model: {net: {encoder_kwargs: {width: 0.125, residual: false}}}}
    panels:             # optional: figure panel title -> variants drawn in it (default: one panel, all)
      residual connections: [published, no-residual]

Each run is a ``zoo train fit`` run assembled by :func:`zoo.train.run.build_run` from the layers (study config,
``--config``, variant, budget) in ``OUTPUT/runs/<variant>/seed<k>/``, with every guarantee of ``zoo train``: a
:class:`Recorder` callback appends one row per validation to its ``metrics.csv``; ``checkpoints/last.ckpt`` is
written at every validation and when SIGTERM or SIGINT stops the run (atomically, finite weights only, with the
random state), so the same command started again resumes each run where it stopped and skips the finished ones.
``OUTPUT/results.csv`` gathers every row; ``OUTPUT/miou_vs_steps.png`` draws validation mIoU against steps as the
Xception paper's Fig. 9/10 (mean and spread over seeds),
``OUTPUT/miou_vs_cost.png`` final mIoU against parameters and MACs.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from zoo.errors import ArgumentError
from zoo.fileio import atomic_write
from zoo.flops import count_macs, count_params
from zoo.train.module import NonFiniteTrainingError
from zoo.train.run import build_run
from zoo.train.study import CSV_FIELDS, Study, load_study
from zoo.viz import plot_study_cost, plot_study_curves


class Recorder(pl.Callback):
    """Appends ``variant, seed, step, val_miou, train_loss, params, macs, step_time`` to a CSV at each validation.

    ``train_loss`` and ``step_time`` (seconds per optimizer step: forward, backward and update, data loading
    excluded) are means over the steps since the previous row; the running sums are saved in checkpoints, so a
    resumed run continues them. A non-finite training loss stops the run with ``FloatingPointError``.

    Args:
        path: the run's CSV (created with a header if missing).
        variant: the variant's name.
        seed: the run's seed.
    """

    def __init__(self, path: str, variant: str, seed: int) -> None:
        self.path, self.variant, self.seed = Path(path), variant, seed
        self.params = self.macs = 0
        self.sums = {"loss": 0.0, "time": 0.0, "steps": 0}
        self._start = 0.0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        model, crop = pl_module.model, trainer.datamodule.hparams.crop_size  # MACs at the training crop
        crop = (crop, crop) if isinstance(crop, int) else tuple(crop)
        self.params = count_params(model)
        self.macs = count_macs(model, torch.zeros(1, 3, *crop, device=pl_module.device))

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        loss = float(outputs["loss"])  # waits for the step to finish on an accelerator
        self.sums["time"] += time.perf_counter() - self._start
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"{self.variant} seed {self.seed}: the training loss is {loss} at step {trainer.global_step}"
            )
        self.sums["loss"] += loss
        self.sums["steps"] += 1

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        steps = max(self.sums["steps"], 1)
        row = {
            "variant": self.variant,
            "seed": self.seed,
            "step": trainer.global_step,
            "val_miou": f"{float(trainer.callback_metrics['val_miou']):.6f}",
            "train_loss": f"{self.sums['loss'] / steps:.6f}",
            "params": self.params,
            "macs": self.macs,
            "step_time": f"{self.sums['time'] / steps:.6f}",
        }
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=CSV_FIELDS, lineterminator="\n")
        if not self.path.is_file():
            writer.writeheader()
        writer.writerow(row)
        with self.path.open("a", newline="") as f:
            f.write(text.getvalue())
        self.sums = {"loss": 0.0, "time": 0.0, "steps": 0}

    def state_dict(self) -> dict[str, Any]:
        return dict(self.sums)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.sums.update(state_dict)


@contextlib.contextmanager
def _quiet(log_file: Path) -> Iterator[None]:
    """Printed tables go to ``log_file``; Lightning's per-Trainer info lines are held back to warnings."""
    loggers = [logging.getLogger(name) for name in ("pytorch_lightning", "lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.WARNING)
        with log_file.open("a") as f, contextlib.redirect_stdout(f):
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def run_one(study: Study, variant: str, seed: int, run_dir: Path) -> None:
    """Train one variant with one seed in ``run_dir`` through :func:`~zoo.train.run.build_run`, from its
    ``last.ckpt`` if any; nothing once ``done``.

    The run is a ``zoo train fit`` run: ``last.ckpt`` every ``val_every`` steps and when SIGTERM or SIGINT stops
    it, written atomically and only with finite weights, with the random state. A finished run keeps its
    ``metrics.csv``, ``config.yaml`` and ``done``, not its checkpoints (the rows are the result).
    """
    if (run_dir / "done").is_file():
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    recorder = {"class_path": f"{__name__}.Recorder",
                "init_args": {"path": str(run_dir / "metrics.csv"), "variant": variant, "seed": seed}}  # fmt: skip
    args = ["fit", *study.layers(variant, seed, run_dir, callbacks=[recorder])]
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        args += ["--ckpt_path", str(last)]
    with _quiet(run_dir / "log.txt"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")
        try:
            cli = build_run(args)
        except (FloatingPointError, NonFiniteTrainingError):
            _remove_checkpoints(run_dir)  # never resume from diverged weights
            raise
    _remove_checkpoints(run_dir)
    atomic_write(run_dir / "done", lambda f: f.write(f"{cli.trainer.global_step}\n".encode()))


def _checkpoints(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "checkpoints").glob("*.ckpt"))


def _remove_checkpoints(run_dir: Path) -> None:
    for path in _checkpoints(run_dir):
        path.unlink()


def read_rows(output: Path, study: Study) -> list[dict[str, Any]]:
    """Every recorded row of ``output``'s runs, one per (variant, seed, step) (a repeated step keeps its last row)."""
    rows: dict[tuple[str, int, int], dict[str, Any]] = {}
    for variant, seed in study.runs():
        path = output / "runs" / variant / f"seed{seed}" / "metrics.csv"
        if path.is_file():
            with path.open(newline="") as f:
                for row in csv.DictReader(f):
                    typed = _typed(row)
                    rows[typed["variant"], typed["seed"], typed["step"]] = typed
    order = {v: i for i, v in enumerate(study.variants)}
    return sorted(rows.values(), key=lambda r: (order[r["variant"]], r["seed"], r["step"]))


def _typed(row: dict[str, str]) -> dict[str, Any]:
    ints, floats = ("seed", "step", "params", "macs"), ("val_miou", "train_loss", "step_time")
    return {k: int(v) if k in ints else float(v) if k in floats else v for k, v in row.items()}


def write_rows(rows: list[dict[str, Any]], path: Path) -> Path:
    """Write ``rows`` (``CSV_FIELDS``) to ``path`` atomically."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write(path, lambda f: f.write(text.getvalue().encode()))


def prepare_output(study: Study, output: Path, force: bool = False) -> None:
    """Create ``output``, or check that it holds this very study (same config, variants and budget) to resume it.

    A non-empty folder that holds something else is refused unless ``force`` (then its runs are removed).

    Raises:
        ArgumentError: (a ValueError) naming ``output``, which holds something else, when ``force`` is not set.
    """
    marker = output / "study.json"
    record = json.loads(json.dumps(asdict(study)))
    if output.is_dir() and any(output.iterdir()) and not force:
        if not marker.is_file():
            raise ArgumentError(
                "output", f"{str(output)!r} is not empty and holds no study; pass force to use it", also=("force",)
            )
        if json.loads(marker.read_text()) != record:
            raise ArgumentError(
                "output",
                f"{str(output)!r} holds another study or budget ({marker}); use another folder, or force to start "
                "over there",
                also=("force",),
            )
        return
    if force and (output / "runs").is_dir():
        shutil.rmtree(output / "runs")
    atomic_write(marker, lambda f: f.write(json.dumps(record, indent=2).encode()))


def run_study(
    study: Study, output: str | Path, *, force: bool = False, log: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    """Run (or resume) every variant × seed of ``study`` in ``output``; write ``results.csv`` and the plots.

    Args:
        study: from :func:`load_study`.
        output: the study folder (created; refused if it holds something else, unless ``force``).
        force: use a non-empty ``output`` that holds something else, removing its runs.
        log: where progress lines go.

    Returns:
        The rows of ``results.csv``.
    """
    output = Path(output)
    prepare_output(study, output, force)
    runs = list(study.runs())
    for i, (variant, seed) in enumerate(runs, 1):
        run_dir = output / "runs" / variant / f"seed{seed}"
        state = "done" if (run_dir / "done").is_file() else "resuming" if _checkpoints(run_dir) else ""
        log(f"[{i}/{len(runs)}] {variant} seed {seed}" + (f" ({state})" if state else ""))
        if state != "done":
            start = time.perf_counter()
            run_one(study, variant, seed, run_dir)
            log(f"[{i}/{len(runs)}] {variant} seed {seed}: {time.perf_counter() - start:.0f} s")
    rows = read_rows(output, study)
    write_rows(rows, output / "results.csv")
    plot_study_curves(rows, output / "miou_vs_steps.png", title=study.description, panels=study.panels)
    plot_study_cost(rows, output / "miou_vs_cost.png", title=study.description)
    return rows


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per variant: params, MACs, last step, final mIoU (mean, std and count over seeds), step time."""
    finals: dict[str, dict[int, dict[str, Any]]] = {}
    for row in rows:
        last = finals.setdefault(row["variant"], {}).get(row["seed"])
        if last is None or row["step"] >= last["step"]:
            finals[row["variant"]][row["seed"]] = row
    summary = []
    for variant, by_seed in finals.items():
        mious = [r["val_miou"] for r in by_seed.values()]
        mean = sum(mious) / len(mious)
        std = math.sqrt(sum((m - mean) ** 2 for m in mious) / (len(mious) - 1)) if len(mious) > 1 else 0.0
        times = [r["step_time"] for r in rows if r["variant"] == variant]
        first = next(iter(by_seed.values()))
        summary.append(
            {
                "variant": variant,
                "params": first["params"],
                "macs": first["macs"],
                "step": min(r["step"] for r in by_seed.values()),
                "miou_mean": mean,
                "miou_std": std,
                "mious": mious,
                "step_time": sum(times) / len(times),
            }
        )
    return summary


def markdown_table(summary: list[dict[str, Any]]) -> str:
    """The summary as a markdown table (final mIoU as mean ± sample std over seeds, and each seed's value)."""
    lines = [
        "| Variant | Params (M) | MMACs | Steps | Final val mIoU (mean ± std) | Per seed | ms/step |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in summary:
        seeds = ", ".join(f"{m:.3f}" for m in s["mious"])
        lines.append(
            f"| {s['variant']} | {s['params'] / 1e6:.3f} | {s['macs'] / 1e6:.1f} | {s['step']} | "
            f"{s['miou_mean']:.3f} ± {s['miou_std']:.3f} | {seeds} | {s['step_time'] * 1e3:.0f} |"
        )
    return "\n".join(lines)


__all__ = [
    "CSV_FIELDS",
    "Recorder",
    "Study",
    "load_study",
    "markdown_table",
    "prepare_output",
    "read_rows",
    "run_one",
    "run_study",
    "summarize",
]
