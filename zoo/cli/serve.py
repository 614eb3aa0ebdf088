"""``zoo serve``: a model behind the Open Inference Protocol v2, a web page and ``/metrics`` (see :mod:`zoo.serve`).

``zoo serve --checkpoint FILE|deeplab-tf:NAME [--fast] [--precision int8 --calibration DIR] [--host 127.0.0.1]
[--port 8000] [--max-batch-size B --max-wait-ms T] [--workers N] [--api-key-file FILE] [--cors-origin URL]``.
With ``--workers N`` each of N processes loads the model and takes connections from one shared socket.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from zoo.cli.options import add_device_argument, add_fast_argument, add_precision_arguments, examples

WORKER_ARGS = "ZOO_SERVE_ARGS"  # the parsed flags, for --workers processes (uvicorn starts them afresh)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``zoo serve``."""
    p.add_argument("--checkpoint", required=True, help="a zoo model file or checkpoint, or deeplab-tf:NAME")
    p.add_argument("--name", default=None, help="the model's name in /v2/models/NAME (default: the file's stem)")
    add_device_argument(p)
    add_fast_argument(p)
    add_precision_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1, help="server processes, each with its own model")
    p.add_argument("--max-batch-size", type=int, default=4, help="most images per model call")
    p.add_argument("--max-wait-ms", type=float, default=10.0, help="how long an image waits for others to batch")
    p.add_argument("--max-queue", type=int, default=32, help="most images waiting; more are answered 503")
    p.add_argument("--max-body-mb", type=float, default=20.0, help="largest request body; more is answered 413")
    p.add_argument("--max-pixels", type=int, default=36_000_000, help="largest image (width x height)")
    p.add_argument("--api-key-file", type=Path, default=None, help="a file holding the key every request must send")
    p.add_argument("--cors-origin", action="append", default=None, help="an origin allowed to call from a browser")
    p.add_argument("--drain-seconds", type=int, default=30, help="time for requests in flight after SIGTERM")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    p.epilog = examples(
        "zoo serve --checkpoint best.pt --fast --port 8000",
        "zoo serve --checkpoint best.pt --precision int8 --calibration calib/ --max-batch-size 4 --max-wait-ms 10",
        "zoo serve --checkpoint best.pt --host 0.0.0.0 --api-key-file key.txt --workers 2",
    )


def _serve_modules() -> Any:
    """The serve extra's modules; without it, one line saying how to install it."""
    try:
        import zoo.serve
        import zoo.serve.server
    except ImportError as error:
        raise OSError(f"zoo serve needs the serve extra: pip install 'zoo[serve]' ({error})") from None
    return zoo.serve


def read_api_key(path: Path | None) -> str | None:
    """The key in ``--api-key-file`` (surrounding whitespace dropped); an empty or missing file is an error."""
    if path is None:
        return None
    if not path.is_file():
        raise FileNotFoundError(f"--api-key-file {path}: no such file")
    key = path.read_text(encoding="utf-8").strip()
    if not key or any(c.isspace() for c in key):
        raise ValueError(f"--api-key-file {path}: the file must hold one key (no spaces), found none or several")
    return key


def build_predictor(args: argparse.Namespace) -> Any:
    """The :class:`zoo.infer.Predictor` of ``--checkpoint`` with ``--fast``/``--precision``/``--calibration``."""
    from zoo.checkpoint import save_model
    from zoo.infer import Predictor
    from zoo.models import build_model

    options = {"device": args.device, "fast": args.fast, "precision": args.precision, "calibration": args.calibration,
               "backend": args.fast_backend}  # fmt: skip
    if not str(args.checkpoint).startswith("deeplab-tf:"):
        return Predictor.from_checkpoint(args.checkpoint, **options)
    model = build_model(weights=str(args.checkpoint))
    with tempfile.TemporaryDirectory() as folder:
        return Predictor.from_checkpoint(save_model(model, Path(folder) / "model.pt"), **options)


def app_options(args: argparse.Namespace) -> dict[str, Any]:
    """:func:`zoo.serve.create_app`'s options from the flags."""
    name = args.name or str(args.checkpoint).split(":")[-1].rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return {
        "name": name,
        "max_batch_size": args.max_batch_size,
        "max_wait_ms": args.max_wait_ms,
        "max_queue": args.max_queue,
        "max_body_bytes": int(args.max_body_mb * 2**20),
        "max_pixels": args.max_pixels,
        "api_key": read_api_key(args.api_key_file),
        "cors_origin": args.cors_origin,
    }


def worker_app() -> Any:
    """The app of one ``--workers`` process (uvicorn's factory), from the flags its parent left in the environment."""
    serving = _serve_modules()
    values = json.loads(os.environ[WORKER_ARGS])
    serving.server.configure_logging(values["log_level"])  # a fresh process: its request log lines need a handler too
    args = argparse.Namespace(**values)
    args.checkpoint, args.calibration = values["checkpoint"], values["calibration"]
    args.api_key_file = Path(values["api_key_file"]) if values["api_key_file"] else None
    return serving.create_app(build_predictor(args), **app_options(args))


def _serve_workers(args: argparse.Namespace) -> None:
    from uvicorn.supervisors import Multiprocess

    from zoo.serve.server import LOG, configure_logging, exposed_without_key, uvicorn_config

    app_options(args)  # the key file and names are checked once, before any process starts
    os.environ[WORKER_ARGS] = json.dumps({k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()})
    configure_logging(args.log_level)
    warning = exposed_without_key(args.host, read_api_key(args.api_key_file))
    if warning:
        LOG.warning(warning)
    config = uvicorn_config("zoo.cli.serve:worker_app", args.host, args.port, log_level=args.log_level,
                            drain_seconds=args.drain_seconds, factory=True, workers=args.workers)  # fmt: skip
    Multiprocess(config, sockets=[config.bind_socket()]).run()


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or Ctrl-C; 0 after a drained stop."""
    serving = _serve_modules()
    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    if args.workers > 1:
        _serve_workers(args)
        return 0
    options = {**app_options(args), "log_level": args.log_level, "drain_seconds": args.drain_seconds}
    serving.serve(build_predictor(args), args.host, args.port, **options)
    return 0
