"""``zoo predict``/``zoo eval`` through Lightning (``--devices``): listing, sharding, resume, bad files, equality.

The fast cases run the Lightning path in this process (one device); the ones marked slow start real processes:
CPU DDP with gloo on 2 processes (one launch for predict, one for eval, reused by several assertions), a run killed
with SIGKILL and resumed, and a listing of 100,000 files.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path

import helpers
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import zoo.infer.listing as listing
from zoo import save_model
from zoo.cli import main
from zoo.cli.predict import output_names
from zoo.data import build_dataset
from zoo.data.shapes import write_shapes
from zoo.infer.listing import ImageShards, list_inputs, write_listing

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def tiny_checkpoint(path: Path, num_classes: int = 3) -> Path:
    model = helpers.tiny_model(num_classes=num_classes)
    with torch.no_grad():
        for module in model.decoder.modules():
            if isinstance(module, torch.nn.Conv2d) and module.out_channels == num_classes:
                module.weight.mul_(1e4)  # logits far from ties
    return save_model(model, path, class_names=[f"c{i}" for i in range(num_classes)])


def write_images(folder: Path, count: int, bad: int = 0) -> Path:
    """``count`` random PNGs of a few sizes (some share a size, so batches group them), and ``bad`` corrupt files."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        size = (20 + 4 * (i % 3), 28)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / f"img{i:03d}.png")
    for i in range(bad):
        (folder / f"broken{i}.jpg").write_bytes(b"not an image")
    return folder


def zoo_process(*argv: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "zoo", *argv],
        env=ENV,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def run_zoo(*argv: str, timeout: float = 240) -> tuple[int, str]:
    process = zoo_process(*argv)
    out, _ = process.communicate(timeout=timeout)
    return process.returncode, out


def outputs(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*.png")}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def test_listing_walks_a_tree_a_text_file_and_a_glob(tmp_path: Path) -> None:
    for rel in ("b/z.png", "b/a.png", "b/a.jpg", "a/c/x.png", "top.png", "notes.txt", "a/skip.json"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    tree = list(list_inputs(tmp_path, output_names))
    assert [name for name, _ in tree] == ["top", "a/c/x", "b/a_jpg", "b/a_png", "b/z"]
    assert [p.relative_to(tmp_path).as_posix() for _, p in tree] == [
        "top.png",
        "a/c/x.png",
        "b/a.jpg",
        "b/a.png",
        "b/z.png",
    ]
    (tmp_path / "list.txt").write_text("# two images\nb/z.png\n\n" + str(tmp_path / "a/c/x.png") + "\n")
    assert [name for name, _ in list_inputs(tmp_path / "list.txt")] == ["b/z", "a/c/x"]
    assert sorted(name for name, _ in list_inputs(str(tmp_path / "b" / "*.png"))) == ["a", "z"]
    with pytest.raises(FileNotFoundError, match="no images there"):
        list(list_inputs(str(tmp_path / "nothing" / "*.png")))


def test_shards_partition_the_listing_over_processes_and_workers(tmp_path: Path) -> None:
    write_images(tmp_path / "in", 9, bad=2)
    count = write_listing(tmp_path / "in", tmp_path / "listing.tsv")
    done = {"img001", "img004"}
    seen: list[str] = []
    for rank in range(2):
        shards = ImageShards(
            tmp_path / "listing.tsv", count, batch_size=2, rank=rank, world_size=2, done=done.__contains__
        )
        batches = list(DataLoader(shards, batch_size=None, num_workers=2, collate_fn=lambda b: b))
        assert len(batches) == len(shards)
        for item in (item for batch in batches for item in batch):
            seen.append(item.name)
            assert item.skipped == (item.name in done)
            assert (item.image is None) == (item.skipped or item.name.startswith("broken"))
            assert ("not an image" in item.error) == item.name.startswith("broken")
    assert sorted(seen) == sorted(name for name, _ in list_inputs(tmp_path / "in")) and len(seen) == 11


def test_one_device_run_counts_bad_files_skips_existing_and_overwrites(tmp_path: Path, checkpoint: Path) -> None:
    images = write_images(tmp_path / "in", 3, bad=1)
    argv = ["predict", "--checkpoint", str(checkpoint), "--input", str(images), "--output", str(tmp_path / "out")]
    assert main([*argv, "--devices", "1"]) == 1
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["written"], summary["skipped"], summary["failed"], summary["images"]) == (3, 0, 1, 4)
    assert summary["failures"][0]["path"].endswith("broken0.jpg") and "not an image" in summary["failures"][0]["reason"]
    assert sorted(outputs(tmp_path / "out")) == [f"{d}/img00{i}.png" for d in ("pred", "vis") for i in range(3)]
    assert not (tmp_path / "out" / ".zoo-predict").exists()
    assert main([*argv, "--devices", "1"]) == 1
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["written"], summary["skipped"], summary["failed"]) == (0, 3, 1)
    (images / "broken0.jpg").unlink()
    assert main([*argv, "--devices", "1", "--overwrite"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["written"], summary["skipped"], summary["failed"]) == (3, 0, 0)


@pytest.fixture(scope="module")
def ddp_predict(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path) -> tuple[Path, int, str]:
    """One 2-process run over 8 images and a corrupt file (9: the last shard is short), beside a one-process run.

    Two scales, flip and a sliding window: the test-time options run the same in both.
    """
    root = tmp_path_factory.mktemp("ddp")
    images = write_images(root / "in", 8, bad=1)
    common = ["--checkpoint", str(checkpoint), "--input", str(images), "--flip", "--scales", "1", "0.75",
              "--slide", "--crop", "16", "16"]  # fmt: skip
    code, out = run_zoo("predict", *common, "--output", str(root / "ddp"), "--devices", "2", "--num-workers", "1",
                        "--batch-size", "2")  # fmt: skip
    assert main(["predict", *common, "--output", str(root / "single")]) == 1
    return root, code, out


@pytest.mark.slow
def test_ddp_predict_is_byte_identical_to_one_process(ddp_predict: tuple[Path, int, str]) -> None:
    root, code, out = ddp_predict
    assert code == 1, out  # the corrupt file
    single, ddp = outputs(root / "single"), outputs(root / "ddp")
    assert len(single) == 16 and ddp == single
    assert not list((root / "ddp").rglob("*.tmp"))


@pytest.mark.slow
def test_ddp_predict_writes_each_image_once_and_counts_per_rank(ddp_predict: tuple[Path, int, str]) -> None:
    root, _, out = ddp_predict
    summary = json.loads((root / "ddp" / "summary.json").read_text())
    assert (summary["images"], summary["written"], summary["failed"], summary["processes"]) == (9, 8, 1, 2)
    per_rank = summary["per_rank"]
    assert [r["rank"] for r in per_rank] == [0, 1]
    # batches of 2 dealt in turn: rank 0 gets batches 0, 2 and 4 (the bad file first, then 4 images), rank 1
    # batches 1 and 3; nothing repeated to even the shards
    assert [(r["written"], r["failed"], r["skipped"]) for r in per_rank] == [(4, 1, 0), (4, 0, 0)]
    assert out.count("images written") == 1  # global rank 0 reports


@pytest.mark.slow
def test_ddp_eval_equals_one_process_exactly(tmp_path: Path) -> None:
    root = write_shapes(tmp_path / "shapes", num_train=1, num_val=3, size=40)
    ckpt = tiny_checkpoint(tmp_path / "tiny.pt", build_dataset("voc", root=root, split="val").num_classes)
    common = ["--checkpoint", str(ckpt), "--dataset", "voc", "--root", str(root), "--split", "val", "--flip"]
    assert main(["eval", *common, "--output", str(tmp_path / "single")]) == 0
    code, out = run_zoo("eval", *common, "--output", str(tmp_path / "ddp"), "--devices", "2", "--num-workers", "1")
    assert code == 0, out
    single = json.loads((tmp_path / "single" / "metrics.json").read_text())
    ddp = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert np.asarray(ddp["confusion_matrix"]).sum() == np.asarray(single["confusion_matrix"]).sum() > 0
    for key in ("confusion_matrix", "miou", "macc", "mdice", "aacc", "iou", "acc", "dice", "precision", "images"):
        assert ddp[key] == single[key], key


@pytest.mark.slow
def test_a_killed_run_resumes_and_redoes_at_most_the_images_in_flight(tmp_path: Path, checkpoint: Path) -> None:
    images = write_images(tmp_path / "in", 200)
    argv = ["predict", "--checkpoint", str(checkpoint), "--input", str(images), "--output", str(tmp_path / "out"),
            "--devices", "2", "--num-workers", "1"]  # fmt: skip
    process = zoo_process(*argv)
    pred = tmp_path / "out" / "pred"
    deadline = time.monotonic() + 240
    while process.poll() is None and time.monotonic() < deadline and len(list(pred.glob("*.png"))) < 40:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the launcher and the process it started
    process.communicate()
    complete = {p.stem: p.stat().st_mtime_ns for p in pred.glob("*.png") if (tmp_path / "out/vis" / p.name).exists()}
    assert 40 <= len(complete) < 200, "the run was not killed part-way"
    code, out = run_zoo(*argv)
    assert code == 0, out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["skipped"] == len(complete) and summary["written"] == 200 - len(complete)
    names = sorted(p.name for p in pred.glob("*.png"))
    assert names == [f"img{i:03d}.png" for i in range(200)]
    assert sorted(p.name for p in (tmp_path / "out" / "vis").glob("*.png")) == names
    assert all((pred / f"{stem}.png").stat().st_mtime_ns == mtime for stem, mtime in complete.items())


@pytest.mark.slow
def test_listing_100000_files_is_lazy_and_decodes_each_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for folder in range(100):
        sub = tmp_path / "in" / f"f{folder:03d}"
        sub.mkdir(parents=True)
        for i in range(1000):
            (sub / f"{i:04d}.jpg").touch()
    write_listing(tmp_path / "in" / "f000", tmp_path / "warm-up.tsv")  # first-call costs (imports) out of the peak
    tracemalloc.start()
    start = time.perf_counter()
    count = write_listing(tmp_path / "in", tmp_path / "listing.tsv")
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    held = list(list_inputs(tmp_path / "in"))  # what a listing held in memory would cost
    whole = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del held
    print(f"listing 100,000 files in 100 folders: {seconds:.2f} s, peak Python memory {peak / 2**20:.2f} MiB "
          f"(the same listing held in a list: {whole / 2**20:.2f} MiB)")  # fmt: skip
    assert count == 100_000 and peak < whole / 2  # one folder's names at a time, never the whole tree's
    decoded: Counter[str] = Counter()
    read = listing.read_image

    def counting_read(path: str) -> np.ndarray:
        decoded[path] += 1
        return read(path)

    monkeypatch.setattr(listing, "read_image", counting_read)
    failed = 0
    for rank in range(2):
        for batch in ImageShards(tmp_path / "listing.tsv", count, batch_size=8, rank=rank, world_size=2):
            failed += sum(1 for item in batch if item.error)
    assert failed == len(decoded) == 100_000 and max(decoded.values()) == 1
