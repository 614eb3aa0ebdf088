"""Running the app: :func:`serve` binds uvicorn to a host and port and stops the way Kubernetes expects.

On SIGTERM (or Ctrl-C) uvicorn stops accepting connections, waits up to ``drain_seconds`` for the requests in
flight (their batches included) to be answered, runs the app's shutdown, and returns. uvicorn then raises the
signal again for the handler that was in place before it started; :func:`serve` installs one that only notes the
signal, so a drained server exits 0 rather than dying of SIGTERM.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from zoo.serve.app import ImagePredictor, create_app

LOG = logging.getLogger("zoo.serve")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


def exposed_without_key(host: str, api_key: str | None) -> str | None:
    """The warning to print when ``host`` is reachable from other machines and no API key is set, else None."""
    if api_key:
        return None
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback:
        return None
    return (f"serving on {host} without an API key: anyone who can reach this machine can use the model "
            "(set an API key, or bind 127.0.0.1)")  # fmt: skip


@contextmanager
def drained_exit() -> Iterator[None]:
    """SIGTERM and SIGINT handlers that do nothing, for uvicorn to re-raise into after its graceful shutdown."""
    signals = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def configure_logging(level: str = "info") -> None:
    """Log lines (each request's id, route, status and time) on stderr."""
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, stream=sys.stderr)


def uvicorn_config(app: Any, host: str, port: int, *, log_level: str, drain_seconds: int, **options: Any):
    """The uvicorn configuration the zoo's server runs with (``app`` may be an import string)."""
    return uvicorn.Config(
        app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=drain_seconds,
        access_log=False, log_config=None, server_header=False, **options,
    )  # fmt: skip


def serve(
    predictor: ImagePredictor,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    log_level: str = "info",
    drain_seconds: int = 30,
    **app_options: Any,
) -> None:
    """Serve ``predictor`` over HTTP until SIGTERM or Ctrl-C, then drain and return.

    Args:
        predictor: the model (see :func:`zoo.serve.create_app`).
        host: the address to bind (127.0.0.1: this machine only; 0.0.0.0: every interface).
        port: the TCP port (0: any free one).
        log_level: "debug", "info", "warning" or "error".
        drain_seconds: how long requests in flight may take to finish after SIGTERM.
        **app_options: :func:`zoo.serve.create_app`'s options (``name``, ``max_batch_size``, ``api_key``, ...).
    """
    configure_logging(log_level)
    warning = exposed_without_key(host, app_options.get("api_key"))
    if warning:
        LOG.warning(warning)
    app = create_app(predictor, **app_options)
    server = uvicorn.Server(uvicorn_config(app, host, port, log_level=log_level, drain_seconds=drain_seconds))
    with drained_exit():
        server.run()
    if not server.started:
        raise OSError(f"the server did not start on {host}:{port} (see the log above)")


__all__ = ["configure_logging", "drained_exit", "exposed_without_key", "serve", "uvicorn_config"]
