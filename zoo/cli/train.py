"""``zoo train`` / ``train.py``: training, validation and testing from YAML configs with Lightning's LightningCLI.

The run is assembled by :func:`zoo.train.run.build_run` (links, checkpoints, callbacks, run folder, resuming);
this module speaks flags: it resolves shipped config names, checks every ``--config`` key and ``--section.key`` flag
before anything runs (one line naming the new or closest key), and turns the outcome into an exit code. A run
writes under ``--trainer.default_root_dir`` (default ``runs``), in ``<name>/version_N`` where the name is the last
``--config`` file's stem; ``--ckpt_path last`` resumes the newest matching run of that name. SIGTERM and SIGINT save
``last.ckpt`` at the current step, say where it is, and exit non-zero (143 and 1); user errors are one line, exit 2,
and a failed run leaves no empty ``version_N`` folder.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

from pytorch_lightning.utilities.exceptions import SIGTERMException

from zoo.cli.options import USER_ERRORS, error_message
from zoo.train.run import TOP_LEVEL, SegmentationCLI, build_run, check_config_keys, check_key

CONFIGS = Path(__file__).resolve().parents[1] / "configs"  # shipped with the package: zoo train fit --config quickstart
_FLAG = re.compile(r"^--((?:model|data|trainer|checkpoint|last_checkpoint|val_overlays)\.[A-Za-z_][\w.]*)(?:=.*)?$")


def cli_main(args: list[str] | None = None, run: bool = True) -> SegmentationCLI:
    """Run the training command line (``fit``, ``validate``, ``test``, ``--print_config``...): :func:`build_run`.

    Args:
        args: command-line arguments (default: ``sys.argv[1:]``).
        run: run the subcommand; with False (and no subcommand in ``args``) only instantiate the classes.
    """
    return build_run(list(sys.argv[1:] if args is None else args), run=run)


def check_flags(argv: list[str]) -> None:
    """Raise ``ValueError`` for a ``--section.key`` flag that is not a setting, naming the new or closest flag."""
    for arg in argv:
        match = _FLAG.match(arg)
        if match is None or match.group(1).startswith(("model.optimizer.", "trainer.callbacks", "trainer.logger")):
            continue
        key = match.group(1)
        if key.startswith(("trainer.", "checkpoint.", "last_checkpoint.")) and key.count(".") > 1:
            continue
        try:
            check_key(key, "command line")
        except ValueError as error:
            text = str(error).replace(": " + key, ": --" + key)
            for section in sorted(TOP_LEVEL):
                text = text.replace(f" {section}.", f" --{section}.")
            raise ValueError(text) from None


def shipped_configs() -> list[str]:
    """Names of the configs shipped with the package (``quickstart``, ``studies/xception-paper``, ...)."""
    return sorted(
        str(p.relative_to(CONFIGS).with_suffix("")) for p in CONFIGS.rglob("*.yaml") if p.parent.name != "base"
    )


def resolve_config(value: str) -> str:
    """A ``--config`` value: a file as given, else the shipped config of that name (``quickstart``)."""
    if Path(value).exists() or Path(value).suffix in (".yaml", ".yml"):
        return value
    shipped = CONFIGS / f"{value}.yaml"
    if shipped.is_file():
        return str(shipped)
    raise FileNotFoundError(f"--config {value}: no such file, nor a shipped config ({', '.join(shipped_configs())})")


def _resolve_configs(argv: list[str]) -> tuple[list[str], list[Path]]:
    """``argv`` with every ``--config`` value resolved (:func:`resolve_config`), and those config files."""
    out, files = list(argv), []
    for i, arg in enumerate(out):
        if arg in ("--config", "-c") and i + 1 < len(out):
            out[i + 1] = resolve_config(out[i + 1])
            files.append(Path(out[i + 1]))
        elif arg.startswith("--config="):
            out[i] = "--config=" + resolve_config(arg.split("=", 1)[1])
            files.append(Path(out[i].split("=", 1)[1]))
    return out, files


def main(argv: list[str] | None = None) -> int:
    """``zoo train SUBCOMMAND ...``: run LightningCLI with ``argv`` (default: ``sys.argv[1:]``); returns the exit code.

    0: done; 2: a user error (one line naming the file or setting); 143: stopped by SIGTERM after saving
    ``last.ckpt`` (resume with ``--ckpt_path last``); 1: stopped by SIGINT (Lightning's exit code).
    """
    SegmentationCLI.last_run = None
    try:
        argv, files = _resolve_configs(list(sys.argv[1:] if argv is None else argv))
        for path in files:
            if path.is_file():
                check_config_keys(path)
        check_flags(argv)
        cli = cli_main(argv)
    except SIGTERMException:
        print(f"zoo train: stopped by SIGTERM; {_saved(SegmentationCLI.last_run)}", file=sys.stderr)
        return 143
    except (KeyboardInterrupt, SystemExit) as stop:
        trainer = getattr(SegmentationCLI.last_run, "trainer", None)
        if isinstance(stop, SystemExit) and not getattr(trainer, "interrupted", False):
            raise  # the parser's own exit (--help, a parse error)
        print(f"zoo train: stopped by Ctrl-C; {_saved(SegmentationCLI.last_run)}", file=sys.stderr)
        return 1
    except USER_ERRORS as error:
        _remove_if_empty(SegmentationCLI.last_run)
        print(f"zoo train: error: {error_message(error)}", file=sys.stderr)
        return 2
    except BaseException:
        _remove_if_empty(SegmentationCLI.last_run)
        raise
    best = getattr(cli.trainer, "checkpoint_callback", None) if cli.subcommand == "fit" else None
    if best is not None and best.best_model_path:
        print(f"zoo train: best val mIoU {float(best.best_model_score):.4f}: {best.best_model_path}")
    return 0


def _saved(cli: SegmentationCLI | None) -> str:
    """Where ``last.ckpt`` is and how to resume."""
    last = getattr(getattr(cli, "trainer", None), "checkpoint_callbacks", None) or []
    for callback in last:
        path = getattr(callback, "last_model_path", "")
        if path:
            return f"{path} saved; resume with the same command and --ckpt_path last"
    return "no checkpoint was saved yet"


def _remove_if_empty(cli: SegmentationCLI | None) -> None:
    """Remove the run folder a failed run created if it holds no checkpoint (no empty ``version_N`` left)."""
    run_dir = getattr(cli, "run_dir", None)
    if run_dir is None or not getattr(cli, "new_run_dir", False) or not run_dir.is_dir():
        return
    if not any(run_dir.rglob("*.ckpt")):
        shutil.rmtree(run_dir)


__all__ = ["cli_main", "main"]
