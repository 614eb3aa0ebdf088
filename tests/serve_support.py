"""Support for the ``zoo serve`` tests: a tiny model file, free ports, and server processes on 127.0.0.1.

Run as a script it serves the tiny model through the embedding entry point (:func:`zoo.serve.serve`) with a
predictor that fails on purpose for images 13 pixels high and is slow for images 29 pixels high, so that a model
error and a full queue can be caused from outside: ``python tests/serve_support.py MODEL PORT [JSON_OPTIONS]``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CLASS_NAMES = ["background", "sky", "road"]
PALETTE = [(0, 0, 0), (70, 130, 180), (128, 64, 128)]
FAIL_HEIGHT, SLOW_HEIGHT, SLOW_SECONDS = 13, 29, 1.5


def save_tiny_model(path: Path) -> Path:
    """The suite's tiny DeepLabV3+ (3 classes, random weights) saved as a zoo model file."""
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import tiny_model

    import zoo

    return zoo.save_model(tiny_model(num_classes=3).eval(), path, class_names=CLASS_NAMES, palette=PALETTE)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png(height: int = 40, width: int = 56, seed: int = 0) -> bytes:
    """A random RGB image as PNG bytes."""
    array = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png(size: int = 40000) -> bytes:
    """A PNG header announcing ``size``×``size`` RGB pixels, with a few bytes of data: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


class ServerProcess:
    """A server started as a child process; :meth:`wait_ready` polls its health route."""

    def __init__(self, command: Sequence[str], port: int, log: Path, threads: int = 1) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
        self._log_file = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self._log_file, stderr=subprocess.STDOUT)

    def wait_ready(self, headers: dict[str, str] | None = None, timeout: float = 60.0) -> ServerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/v2/health/ready", headers=headers, timeout=1).status_code == 200:
                    return self
            time.sleep(0.2)
        raise TimeoutError(f"the server did not become ready in {timeout} s:\n{self.log.read_text()}")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then the exit code (killed after ``timeout`` s)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._log_file.close()
        return code


def start_cli(model: Path, log: Path, *flags: str) -> ServerProcess:
    """``zoo serve --checkpoint MODEL --port P FLAGS`` as a process."""
    port = free_port()
    command = [sys.executable, "-m", "zoo", "serve", "--checkpoint", str(model), "--port", str(port), *flags]
    return ServerProcess(command, port, log)


def start_embedded(model: Path, log: Path, **options) -> ServerProcess:
    """This file as a script: :func:`zoo.serve.serve` with the faulty predictor and ``options``."""
    port = free_port()
    command = [sys.executable, __file__, str(model), str(port), json.dumps(options)]
    return ServerProcess(command, port, log)


class FaultyPredictor:
    """A predictor that raises for a batch holding a ``FAIL_HEIGHT`` image and sleeps for a ``SLOW_HEIGHT`` one."""

    def __init__(self, predictor) -> None:
        self.predictor = predictor
        self.num_classes = predictor.num_classes
        self.class_names = predictor.class_names
        self.palette = predictor.palette

    def predict_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        heights = {image.shape[0] for image in images}
        if FAIL_HEIGHT in heights:
            raise RuntimeError("injected fault")
        if SLOW_HEIGHT in heights:
            time.sleep(SLOW_SECONDS)
        return self.predictor.predict_batch(images)


@contextlib.contextmanager
def running(server: ServerProcess, headers: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    try:
        yield server.wait_ready(headers)
    finally:
        server.stop()


def main(argv: Sequence[str]) -> None:
    from zoo.infer import Predictor
    from zoo.serve import serve

    model, port, options = argv[0], int(argv[1]), json.loads(argv[2]) if len(argv) > 2 else {}
    serve(FaultyPredictor(Predictor.from_checkpoint(model)), "127.0.0.1", port, **options)


if __name__ == "__main__":
    main(sys.argv[1:])
