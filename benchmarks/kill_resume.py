"""Kill -9 a training run at random steps, resume it each time with ``--ckpt_path last``, compare with a straight run.

    python benchmarks/kill_resume.py --config configs/quickstart.yaml --kills 5 --out benchmarks/results/kill_resume
    python benchmarks/kill_resume.py --max-steps 60 --val-every 30 --save-every 10   # a shorter schedule

Two runs of ``train.py fit`` on the same config (one thread each): one uninterrupted, one killed with SIGKILL at
``--kills`` random steps (``tests/faults.py``'s ``SignalAtStep`` sends the signal from inside the process at the
end of that optimizer step) and resumed after each kill. For every kill it records the step of the ``last.ckpt``
left behind and the steps lost; at the end it compares the final validation mIoU and the final weights.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]


def train(workdir: Path, config: Path, *extra: str) -> int:
    """Run ``train.py fit`` in ``workdir``; returns its exit code (output in ``workdir/train.log``)."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(REPO / "train.py"), "fit", "--config", str(config), *extra]
    with (workdir / "train.log").open("a") as log:
        return subprocess.run(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT).returncode


def last_checkpoint(workdir: Path, name: str) -> Path:
    return workdir / "runs" / name / "version_0" / "checkpoints" / "last.ckpt"


def final_miou(workdir: Path, name: str) -> float:
    rows = (workdir / "runs" / name / "version_0" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    column = header.index("val_miou")
    return [float(r.split(",")[column]) for r in rows[1:] if r.split(",")[column]][-1]


def killed_run(workdir: Path, config: Path, steps: list[int], name: str) -> list[dict]:
    """Kill at each of ``steps``, resume after each; returns one record per kill."""
    records = []
    for index, step in enumerate(steps):
        resume = ["--ckpt_path", "last"] if index else []
        kill = ["--trainer.callbacks+=faults.SignalAtStep", "--trainer.callbacks.init_args.step", str(step)]
        start = time.perf_counter()
        code = train(workdir, config, *resume, *kill)
        saved = torch.load(last_checkpoint(workdir, name), map_location="cpu", weights_only=True)["global_step"]
        records.append(
            {
                "kill_step": step,
                "exit_code": code,
                "last_ckpt_step": saved,
                "steps_lost": step - saved,
                "seconds": round(time.perf_counter() - start, 1),
            }  # fmt: skip
        )
        print(json.dumps(records[-1]), flush=True)
    assert train(workdir, config, "--ckpt_path", "last") == 0, f"final resume failed, see {workdir}/train.log"
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "quickstart.yaml")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill steps")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "kill_resume")
    parser.add_argument("--max-steps", type=int, default=None, help="override trainer.max_steps")
    parser.add_argument("--val-every", type=int, default=None, help="override trainer.val_check_interval")
    parser.add_argument("--save-every", type=int, default=None, help="override last_checkpoint.every_n_train_steps")
    args = parser.parse_args()
    config = yaml.safe_load(args.config.read_text())
    for value, section, key in (
        (args.max_steps, "trainer", "max_steps"),
        (args.val_every, "trainer", "val_check_interval"),
        (args.save_every, "last_checkpoint", "every_n_train_steps"),
    ):
        if value is not None:
            config[section][key] = value
    config["trainer"]["enable_progress_bar"] = False
    max_steps = int(config["trainer"]["max_steps"])
    interval = int(config["last_checkpoint"]["every_n_train_steps"])
    steps = sorted(random.Random(args.seed).sample(range(1, max_steps), args.kills))
    name = args.config.stem
    dirs = {kind: args.out / kind for kind in ("straight", "killed")}
    for folder in dirs.values():
        folder.mkdir(parents=True, exist_ok=False)
    config_path = args.out / args.config.name  # same stem, so the same run name
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    start = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        straight = pool.submit(train, dirs["straight"], config_path)
        killed = pool.submit(killed_run, dirs["killed"], config_path, steps, name)
        assert straight.result() == 0, f"straight run failed, see {dirs['straight']}/train.log"
        records = killed.result()
    a, b = (torch.load(last_checkpoint(d, name), map_location="cpu", weights_only=True) for d in dirs.values())
    same = all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    result = {
        "config": str(args.config),
        "command": " ".join(sys.argv),
        "max_steps": max_steps,
        "save_interval": interval,
        "kills": records,
        "max_steps_lost": max(r["steps_lost"] for r in records),
        "final_val_miou": {"straight": final_miou(dirs["straight"], name), "killed": final_miou(dirs["killed"], name)},
        "final_weights_identical": same,
        "wall_seconds": round(time.perf_counter() - start),
    }
    (args.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
