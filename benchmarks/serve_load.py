"""Load on ``zoo serve`` over loopback, against the same model's offline fast path in one process.

    python benchmarks/serve_load.py [--soak-seconds 300] [--compare-litserve] [--json FILE]

1. throughput with ``--clients`` concurrent clients (closed loop, ``POST /predict`` of a 512x512 JPEG, PNG mask
   back) against ``Predictor.predict_batch`` in this process on the same JPEGs decoded the same way, rounds
   alternating; p50/p95/p99 latency;
2. a soak at 80 % of the measured capacity (open loop, fixed arrival rate) with ``--malformed`` bad requests
   (non-image, truncated, empty, a 40000x40000 PNG header, a body over the limit, a bad protocol request) mixed
   in: every good request must succeed, every bad one get a 4xx; the server's RSS before and after;
3. 3x capacity for ``--overload-seconds``: the answers' codes and the latency of the accepted requests;
4. with ``--compare-litserve``: the same model behind LitServe (its batching, JSON with a base64 image) under the
   same clients, for the choice of server library.

The model is DeepLabV3+ Xception-65 OS16 with 21 classes and random weights (speed does not depend on them); the
images are the built-in shapes data at 512x512. Linux only (RSS from /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from serve_support import ServerProcess, bomb_png, free_port  # noqa: E402


def make_jpegs(count: int, size: int) -> list[bytes]:
    from zoo.data.shapes import make_shapes_item

    out = []
    for i in range(count):
        buffer = io.BytesIO()
        Image.fromarray(make_shapes_item(seed=1, split="val", index=i, size=size)[0]).save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def percentiles(values: list[float]) -> dict[str, float]:
    q = np.percentile(np.asarray(values) * 1e3, [50, 95, 99]) if values else [float("nan")] * 3
    return {"p50_ms": round(float(q[0]), 1), "p95_ms": round(float(q[1]), 1), "p99_ms": round(float(q[2]), 1)}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def offline_round(predictor, jpegs: list[bytes], requests: int, batch: int) -> float:
    """Images per second of decode + ``predict_batch`` in batches of ``batch`` in this process."""
    from zoo.serve.images import decode_image

    start = time.perf_counter()
    for first in range(0, requests, batch):
        images = [decode_image(jpegs[i % len(jpegs)]) for i in range(first, min(first + batch, requests))]
        predictor.predict_batch(images)
    return requests / (time.perf_counter() - start)


async def closed_loop(url: str, jpegs: list[bytes], clients: int, requests: int, body=None) -> dict:
    """``clients`` clients each sending the next request when the last one is answered."""
    latencies, codes, counter = [], [], iter(range(requests))
    body = body or (lambda data: {"content": data, "headers": {"content-type": "image/jpeg"}})

    async def client(http: httpx.AsyncClient) -> None:
        for i in counter:
            t = time.perf_counter()
            answer = await http.post(url, **body(jpegs[i % len(jpegs)]))
            latencies.append(time.perf_counter() - t)
            codes.append(answer.status_code)

    start = time.perf_counter()
    async with httpx.AsyncClient(timeout=900, limits=httpx.Limits(max_connections=clients)) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    seconds = time.perf_counter() - start
    return {"img_s": requests / seconds, "ok": codes.count(200), "requests": requests, **percentiles(latencies)}


def malformed_requests(base: str, name: str, limit: int, good: bytes) -> list[tuple[str, dict]]:
    """(url, httpx keyword arguments) of the kinds of bad request, in rotation."""
    predict = f"{base}/predict"
    kinds = [
        (predict, {"content": b"this is not an image", "headers": {"content-type": "text/plain"}}),
        (predict, {"content": good[: len(good) // 3], "headers": {"content-type": "image/jpeg"}}),
        (predict, {"content": b"", "headers": {"content-type": "image/jpeg"}}),
        (predict, {"content": bomb_png(), "headers": {"content-type": "image/png"}}),
        (predict, {"content": b"\0" * (limit + 1), "headers": {"content-type": "image/jpeg"}}),
        (f"{base}/v2/models/{name}/infer", {"content": b'{"inputs": [{"name": "pixels", "datatype": "UINT8"}]}'}),
    ]
    return kinds


async def open_loop(base: str, jpegs: list[bytes], rate: float, seconds: float, bad: list, pid: int) -> dict:
    """Requests at ``rate`` per second for ``seconds``; ``bad`` requests spread evenly among them."""
    url, total = f"{base}/predict", int(rate * seconds)
    bad_at: dict[int, list[int]] = {}
    for k in range(len(bad)):  # besides the good requests, spread evenly among them
        bad_at.setdefault(int(k * total / len(bad)), []).append(k)
    good_codes, bad_codes, latencies, rss = [], [], [], []

    async def malformed(http: httpx.AsyncClient, k: int) -> None:
        target, kwargs = bad[k]
        bad_codes.append((await http.post(target, **kwargs)).status_code)

    async def one(http: httpx.AsyncClient, index: int) -> None:
        t = time.perf_counter()
        answer = await http.post(url, content=jpegs[index % len(jpegs)], headers={"content-type": "image/jpeg"})
        good_codes.append(answer.status_code)
        if answer.status_code == 200:
            latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    tasks = []
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=None)) as http:
        for index in range(total):
            delay = start + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if index % max(1, int(rate * 5)) == 0:
                rss.append(rss_mb(pid))
            tasks.append(asyncio.create_task(one(http, index)))
            tasks.extend(asyncio.create_task(malformed(http, k)) for k in bad_at.get(index, []))
        await asyncio.gather(*tasks)
    rss.append(rss_mb(pid))
    codes = {str(c): good_codes.count(c) for c in sorted(set(good_codes))}
    return {"rate": round(rate, 3), "seconds": seconds, "good": len(good_codes), "good_codes": codes,
            "bad": len(bad_codes), "bad_4xx": sum(400 <= c < 500 for c in bad_codes),
            "bad_codes": {str(c): bad_codes.count(c) for c in sorted(set(bad_codes))},
            "rss_mb_first": round(rss[0], 1), "rss_mb_last": round(rss[-1], 1),
            "max_ms": round(max(latencies, default=0) * 1e3, 1), **percentiles(latencies)}  # fmt: skip


try:  # only for --compare-litserve
    import litserve
except ImportError:
    litserve = None

if litserve is not None:

    class SegmentationAPI(litserve.LitAPI):
        """The model behind LitServe: base64 image in JSON, decoded like zoo serve, a PNG mask back."""

        def setup(self, device):
            from zoo.infer import Predictor

            self.predictor = Predictor.from_checkpoint(os.environ["SERVE_LOAD_MODEL"], fast=True)

        def decode_request(self, request):
            from zoo.serve.images import decode_image

            return decode_image(base64.b64decode(request["image"]))

        def predict(self, images):
            return self.predictor.predict_batch(list(images))

        def encode_response(self, mask):
            from zoo.serve.images import png_bytes

            return {"mask_png": base64.b64encode(png_bytes(mask, self.predictor.palette or [])).decode()}


def litserve_main(model: str, port: int, batch: int, wait_ms: float) -> None:
    """Run the model behind LitServe (the comparison's server process)."""
    os.environ["SERVE_LOAD_MODEL"] = model  # inherited by LitServe's inference process
    api = SegmentationAPI(max_batch_size=batch, batch_timeout=wait_ms / 1000)
    litserve.LitServer(api, accelerator="cpu", devices=1, workers_per_device=1, timeout=False).run(
        port=port, generate_client_file=False
    )


def warm_up_offline(predictor, jpegs: list[bytes], batch: int) -> None:
    """The fast path specialises to each batch size the first time it sees it: every size, twice."""
    for size in range(1, batch + 1):
        for _ in range(2):
            offline_round(predictor, jpegs, size, size)


def warm_up_server(url: str, jpegs: list[bytes], batch: int, clients: int, body=None) -> None:
    """Bursts of 1..``batch`` concurrent requests (batches of every size), then a closed-loop round."""
    for size in range(1, batch + 1):
        for _ in range(2):
            asyncio.run(closed_loop(url, jpegs, size, size, body))
    asyncio.run(closed_loop(url, jpegs, clients, 2 * clients, body))


def start_zoo(model: Path, log: Path, args) -> ServerProcess:
    port = free_port()
    command = [sys.executable, "-m", "zoo", "serve", "--checkpoint", str(model), "--port", str(port), "--fast",
               "--max-batch-size", str(args.max_batch_size), "--max-wait-ms", str(args.max_wait_ms),
               "--max-queue", str(args.max_queue), "--log-level", "warning"]  # fmt: skip
    return ServerProcess(command, port, log, threads=args.threads)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=32, help="requests per throughput round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max-batch-size", type=int, default=4)
    p.add_argument("--max-wait-ms", type=float, default=10.0)
    p.add_argument("--max-queue", type=int, default=16)
    p.add_argument("--soak-seconds", type=float, default=300.0)
    p.add_argument("--malformed", type=int, default=100)
    p.add_argument("--overload-seconds", type=float, default=30.0)
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads, here and in the server")
    p.add_argument("--compare-litserve", action="store_true")
    p.add_argument("--capacity", type=float, default=None, help="img/s for the soak and overload (skips step 1)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--litserve-worker", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.litserve_worker:
        model, port, batch, wait = args.litserve_worker
        litserve_main(model, int(port), int(batch), float(wait))
        return
    import torch

    torch.set_num_threads(args.threads)
    import zoo

    folder = Path(tempfile.mkdtemp(prefix="serve_load_"))
    torch.manual_seed(0)
    model = zoo.save_model(zoo.build_model("xception65", "deeplabv3plus", num_classes=21, output_stride=16).eval(),
                           folder / "xception65_deeplabv3plus.pt")  # fmt: skip
    jpegs = make_jpegs(8, args.size)
    result: dict = {"machine": os.uname().nodename, "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
                    "args": {k: str(v) for k, v in vars(args).items()}}  # fmt: skip
    server = start_zoo(model, folder / "zoo.log", args).wait_ready(timeout=600)
    try:
        warm_up_server(f"{server.url}/predict", jpegs, args.max_batch_size, args.clients)
        if args.compare_litserve:
            result["litserve_vs_zoo"] = compare_litserve(model, folder, jpegs, server.url, args)
        capacity = args.capacity or throughput(model, jpegs, server.url, args, result)
        bad = malformed_requests(server.url, model.stem, 20 * 2**20, jpegs[0])
        bad = [bad[i % len(bad)] for i in range(args.malformed)]
        pid = server.process.pid
        result["soak"] = asyncio.run(open_loop(server.url, jpegs, 0.8 * capacity, args.soak_seconds, bad, pid))
        print("soak", result["soak"], flush=True)
        if args.overload_seconds > 0:
            result["overload"] = asyncio.run(open_loop(server.url, jpegs, 3 * capacity, args.overload_seconds, [], pid))
            result["overload"]["queue_bound_ms"] = round(1e3 * (args.max_queue + args.max_batch_size) / capacity, 1)
            print("overload", result["overload"], flush=True)
    finally:
        result["zoo_exit_code"] = server.stop()
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


def throughput(model: Path, jpegs: list[bytes], base: str, args, result: dict) -> float:
    """Offline fast path in this process against the server, alternating rounds; the server's median img/s."""
    from zoo.infer import Predictor

    predictor = Predictor.from_checkpoint(model, fast=True)
    warm_up_offline(predictor, jpegs, args.max_batch_size)
    offline, served = [], []
    for _ in range(args.rounds):  # alternating, so that both see the same machine load
        offline.append(offline_round(predictor, jpegs, args.requests, args.max_batch_size))
        served.append(asyncio.run(closed_loop(f"{base}/predict", jpegs, args.clients, args.requests)))
        print(f"offline {offline[-1]:.2f} img/s, served {served[-1]}", flush=True)
    capacity = statistics.median(s["img_s"] for s in served)
    result["offline_img_s"] = [round(x, 3) for x in offline]
    result["served"] = served
    result["ratio_of_medians"] = round(capacity / statistics.median(offline), 3)
    result["median_round_ratio"] = round(
        statistics.median(s["img_s"] / o for s, o in zip(served, offline, strict=True)), 3
    )
    return capacity


def compare_litserve(model: Path, folder: Path, jpegs: list[bytes], zoo_url: str, args) -> list[dict]:
    """The same model behind LitServe and zoo serve, alternating closed-loop rounds."""
    port = free_port()
    command = [sys.executable, __file__, "--litserve-worker", str(model), str(port), str(args.max_batch_size),
               str(args.max_wait_ms)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(args.threads)}
    rounds = []
    with open(folder / "litserve.log", "wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_litserve(url, process)
            body = lambda data: {"json": {"image": base64.b64encode(data).decode()}}  # noqa: E731
            warm_up_server(f"{url}/predict", jpegs, args.max_batch_size, args.clients, body)
            for _ in range(args.rounds):
                zoo_round = asyncio.run(closed_loop(f"{zoo_url}/predict", jpegs, args.clients, args.requests))
                lit_round = asyncio.run(closed_loop(f"{url}/predict", jpegs, args.clients, args.requests, body))
                rounds.append({"zoo": zoo_round, "litserve": lit_round})
                print("zoo", zoo_round, "litserve", lit_round, flush=True)
        finally:  # LitServe's own processes too
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(60)
    return rounds


def _wait_litserve(url: str, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("LitServe exited")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError("LitServe did not start")


if __name__ == "__main__":
    main()
