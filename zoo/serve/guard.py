"""What every request passes through first: a request id, the API key, the body limit, metrics and the log line.

One plain ASGI middleware (no per-request task or body copy, unlike Starlette's ``BaseHTTPMiddleware``):

- the request id is the client's ``X-Request-ID`` when it is a short token, else a new one; it is sent back in
  ``X-Request-ID`` and starts the request's log line;
- with an API key, a request without ``Authorization: Bearer KEY`` (or ``X-API-Key: KEY``) is answered 401; keys are
  compared with :func:`hmac.compare_digest` (constant time); ``GET /`` (the page, which holds no data) is open;
- a ``Content-Length`` over the limit is answered 413 before the body is read, and a chunked body is cut off with
  413 as soon as it passes the limit;
- each request is counted by route and status and timed (:class:`~zoo.serve.metrics.ServerMetrics`).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
import uuid
from typing import Any

from zoo.serve.metrics import ServerMetrics

LOG = logging.getLogger("zoo.serve")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_OPEN_PATHS = {"/"}


class BodyTooLarge(Exception):
    """The body passed the limit while it was being read (the app answers it with :func:`too_large`)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body over the limit of {limit} bytes")


def json_error(status: int, reason: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    """Status, body and headers of an error answer: ``{"error": "one line"}`` (the protocol's error shape)."""
    return status, json.dumps({"error": reason}).encode(), {"content-type": "application/json", **(headers or {})}


def route_of(path: str) -> str:
    """A low-cardinality route label for metrics (model names and unknown paths folded)."""
    if path.startswith("/v2/models/"):
        tail = path.rsplit("/", 1)[-1]
        return f"/v2/models/{{name}}/{tail}" if tail in ("infer", "ready") else "/v2/models/{name}"
    known = ("/", "/predict", "/metrics", "/v2", "/v2/health/live", "/v2/health/ready")
    return path if path in known else "other"


class Guard:
    """The ASGI middleware described in the module docstring.

    Args:
        app: the application it wraps.
        metrics: where requests are counted.
        max_body_bytes: the largest request body accepted.
        api_key: the key every request must carry, or None for none.
    """

    def __init__(self, app: Any, *, metrics: ServerMetrics, max_body_bytes: int, api_key: str | None) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = int(max_body_bytes)
        self.api_key = api_key.encode() if api_key else None

    def _authorised(self, headers: dict[bytes, bytes], path: str) -> bool:
        if self.api_key is None or path in _OPEN_PATHS:
            return True
        auth = headers.get(b"authorization", b"")
        given = auth[7:].strip() if auth[:7].lower() == b"bearer " else headers.get(b"x-api-key", b"")
        return hmac.compare_digest(given, self.api_key)

    def _refusal(self, headers: dict[bytes, bytes], path: str) -> tuple[int, bytes, dict[str, str]] | None:
        if not self._authorised(headers, path):
            return json_error(401, "missing or wrong API key: send 'Authorization: Bearer KEY'",
                              {"www-authenticate": "Bearer"})  # fmt: skip
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            return json_error(413, f"request body over the limit of {self.max_body_bytes} bytes")
        return None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        headers = dict(scope["headers"])
        given_id = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given_id if _REQUEST_ID.fullmatch(given_id) else uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = request_id
        status: dict[str, int] = {"code": 500}
        received = {"bytes": 0}

        async def counted_receive() -> dict:
            message = await receive()
            received["bytes"] += len(message.get("body", b""))
            if received["bytes"] > self.max_body_bytes:
                raise BodyTooLarge(self.max_body_bytes)
            return message

        async def tagged_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], 1
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        refusal = self._refusal(headers, scope["path"])
        try:
            if refusal is not None:
                await _answer(tagged_send, *refusal)
            else:
                await self.app(scope, counted_receive, tagged_send)
        except BodyTooLarge:
            if status.get("started"):
                raise
            await _answer(tagged_send, *json_error(413, f"request body over the limit of {self.max_body_bytes} bytes"))
        finally:
            seconds = time.perf_counter() - start
            self.metrics.request_done(route_of(scope["path"]), status["code"], seconds)
            LOG.info("%s %s %s %d %.1fms", request_id, scope["method"], scope["path"], status["code"], seconds * 1e3)


async def _answer(send: Any, status: int, body: bytes, headers: dict[str, str]) -> None:
    raw = [(k.encode(), v.encode()) for k, v in headers.items()] + [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


__all__ = ["BodyTooLarge", "Guard", "json_error", "route_of"]
