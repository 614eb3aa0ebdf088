"""The server's routes on FastAPI: the Open Inference Protocol v2, ``/predict`` for people, the page, ``/metrics``.

Why FastAPI + uvicorn and not LitServe (measured with ``benchmarks/serve_load.py --compare-litserve``; numbers in
BENCHMARKS.md): what this server must guarantee is routes of the protocol's shape (``/v2/models/{name}/infer``,
health, metadata), a bounded queue that answers 503 with Retry-After, a 413 body limit, a drain on SIGTERM that
exits 0, and an error in one batch failing only that batch. LitServe (0.2) gives one fixed path per API, queues
requests in an unbounded ``multiprocessing`` manager queue (no 503, an unbounded backlog), lifts Starlette's
multipart size limits process-wide, and moves every request through pickling to inference processes; with
FastAPI each of those is a few lines we own (:mod:`zoo.serve.batching`, :mod:`zoo.serve.guard`), and the
batching is an ``asyncio`` queue in the same process as the model. Measured on the shared 2-core CPU with
DeepLabV3+ X-65 at 512x512 and 8 clients, alternating: LitServe 0.18 img/s against 0.35-0.40 for this server.
uvicorn gives the HTTP server, its graceful shutdown and ``workers`` (processes sharing one socket).
"""

from __future__ import annotations

import base64
import contextlib
import importlib.resources
import logging
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.middleware.cors import CORSMiddleware

from zoo.data.io import voc_palette
from zoo.serve.batching import Batcher, QueueFull
from zoo.serve.guard import BodyTooLarge, Guard, json_error
from zoo.serve.images import DEFAULT_MAX_PIXELS, BadImage, decode_image, overlay_png, png_bytes
from zoo.serve.metrics import ServerMetrics
from zoo.serve.protocol import (
    HEADER_LENGTH,
    ProtocolError,
    class_shares,
    infer_response,
    model_metadata,
    parse_infer_request,
)
from zoo.version import __version__

LOG = logging.getLogger("zoo.serve")
FORMATS = ("mask", "overlay", "json")


class ImagePredictor(Protocol):
    """What the server needs of a model (:class:`zoo.infer.Predictor` is one)."""

    num_classes: int
    class_names: list[str] | None
    palette: list[tuple[int, int, int]] | None

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray]: ...


class HTTPError(Exception):
    """An answer other than 200, with a one-line reason."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers or {}


def _error_response(status: int, reason: str, headers: dict[str, str] | None = None) -> Response:
    code, body, all_headers = json_error(status, reason, headers)
    return Response(body, status_code=code, headers=all_headers)


class Model:
    """A predictor behind a batcher, with its name, classes and colours.

    Args:
        predictor: the model.
        name: the model's name in the protocol's routes.
        batcher: the queue in front of it.
        max_pixels: the largest image accepted (width × height).
    """

    def __init__(self, predictor: ImagePredictor, name: str, batcher: Batcher, max_pixels: int) -> None:
        self.predictor = predictor
        self.name = name
        self.batcher = batcher
        self.max_pixels = int(max_pixels)
        count = int(predictor.num_classes)
        self.class_names = list(predictor.class_names or [f"class {i}" for i in range(count)])
        self.palette = [tuple(int(v) for v in c) for c in (predictor.palette or voc_palette(count))]

    def check_name(self, name: str) -> None:
        if name != self.name:
            raise HTTPError(404, f"unknown model {name!r}: this server has {self.name!r}")

    async def decode(self, data: bytes) -> np.ndarray:
        try:
            return await run_in_threadpool(decode_image, data, max_pixels=self.max_pixels)
        except BadImage as error:
            raise HTTPError(error.status, error.reason) from None

    async def predict(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Masks of ``images``, each queued on its own so that it can share a batch with other requests."""
        for image in images:
            if image.shape[0] * image.shape[1] > self.max_pixels:
                raise HTTPError(400, f"image too large: {image.shape[1]}x{image.shape[0]} pixels is over the limit "
                                     f"of {self.max_pixels} pixels")  # fmt: skip
        if len(images) > self.batcher.max_queue:
            raise HTTPError(400, f"{len(images)} images in one request: send at most {self.batcher.max_queue}")
        try:
            return await self.batcher.submit_many(images)
        except QueueFull as error:
            retry = str(self.batcher.retry_after())
            raise HTTPError(503, f"server busy: {error}; retry after {retry} s", {"retry-after": retry}) from None
        except Exception as error:  # noqa: BLE001 - a model error fails this request (and its batch) only
            LOG.exception("model error")
            first_line = (str(error).strip().splitlines() or [""])[0]
            raise HTTPError(500, f"model error: {type(error).__name__}: {first_line}") from None


def _lifespan(model: Model):
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await model.batcher.start()
        app.state.ready = True
        try:
            yield
        finally:
            app.state.ready = False
            await model.batcher.stop()

    return lifespan


async def _upload(request: Request) -> bytes:
    """The image of a ``/predict`` request: the first file of a multipart form, or the raw body."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        files = [v for v in form.values() if hasattr(v, "read")]
        if not files:
            raise HTTPError(400, "the multipart form holds no file: send the image as a file field ('image')")
        return await files[0].read()
    return await request.body()


def _page() -> str:
    return importlib.resources.files("zoo.serve").joinpath("static/index.html").read_text(encoding="utf-8")


def _routes(app: FastAPI, model: Model) -> None:
    page = _page().replace("{{MODEL}}", model.name)

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"content-security-policy": "default-src 'self' data: blob: 'unsafe-inline'"})

    @app.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        return {"name": "zoo", "version": __version__, "extensions": ["binary_tensor_data"]}

    @app.get("/v2/health/live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready(request: Request) -> Response:
        is_ready = bool(getattr(request.app.state, "ready", False))
        return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)

    @app.get("/v2/models/{name}")
    async def metadata(name: str) -> dict[str, Any]:
        model.check_name(name)
        return model_metadata(model.name, model.class_names, model.palette)

    @app.get("/v2/models/{name}/ready")
    async def model_ready(name: str, request: Request) -> Response:
        model.check_name(name)
        return await ready(request)

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, request: Request) -> Response:
        model.check_name(name)
        try:
            parsed = parse_infer_request(await request.body(), request.headers.get(HEADER_LENGTH))
        except ProtocolError as error:
            raise HTTPError(400, str(error)) from None
        images = [await model.decode(data) for data in parsed.images] or parsed.pixels
        if len({image.shape for image in images}) > 1:
            raise HTTPError(400, "images of different sizes in one request: send them one per request")
        masks = await model.predict(images)
        body, headers = infer_response(parsed, masks, len(model.class_names), model.name)
        return Response(body, headers=headers)

    @app.post("/predict")
    async def predict(request: Request, format: str = "mask", opacity: float = 0.5, include_mask: bool = False):
        if format not in FORMATS:
            raise HTTPError(400, f"format must be one of {', '.join(FORMATS)}, got {format!r}")
        if not 0.0 <= opacity <= 1.0:
            raise HTTPError(400, f"opacity must be in [0, 1], got {opacity}")
        image = await model.decode(await _upload(request))
        (mask,) = await model.predict([image])
        if format == "mask":
            return Response(await run_in_threadpool(png_bytes, mask, model.palette), media_type="image/png")
        if format == "overlay":
            drawn = await run_in_threadpool(overlay_png, image, mask, model.class_names, model.palette, opacity)
            return Response(drawn, media_type="image/png")
        return JSONResponse(await run_in_threadpool(_shares_json, model, mask, include_mask))

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        observer = app.state.metrics
        return Response(observer.exposition(), media_type=observer.content_type)


def _shares_json(model: Model, mask: np.ndarray, include_mask: bool) -> dict[str, Any]:
    shares = class_shares(mask, len(model.class_names))
    classes = [
        {"id": i, "name": model.class_names[i], "color": list(model.palette[i]), "share": round(float(s), 6)}
        for i, s in enumerate(shares)
    ]
    out: dict[str, Any] = {"model": model.name, "height": int(mask.shape[0]), "width": int(mask.shape[1])}
    out["classes"] = classes
    if include_mask:
        out["mask_png"] = base64.b64encode(png_bytes(mask, model.palette)).decode()
    return out


def create_app(
    predictor: ImagePredictor,
    *,
    name: str = "zoo",
    max_batch_size: int = 4,
    max_wait_ms: float = 10.0,
    max_queue: int = 32,
    max_body_bytes: int = 20 * 2**20,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    api_key: str | None = None,
    cors_origin: str | Sequence[str] | None = None,
) -> FastAPI:
    """The ASGI application serving ``predictor`` (run it with :func:`zoo.serve.serve` or any ASGI server).

    Args:
        predictor: a :class:`zoo.infer.Predictor` (or anything with ``predict_batch``, ``num_classes``,
            ``class_names`` and ``palette``); it runs on one thread, a batch at a time.
        name: the model's name in ``/v2/models/{name}``.
        max_batch_size: most images per model call.
        max_wait_ms: how long the first image of a batch waits for others.
        max_queue: most images waiting; more are answered 503 with Retry-After.
        max_body_bytes: the largest request body; a larger one is answered 413.
        max_pixels: the largest image (width × height); a larger one is answered 400 before it is decoded.
        api_key: when given, every request but ``GET /`` needs it (401 otherwise).
        cors_origin: origin(s) allowed to call the server from a browser page elsewhere (default: none).
    """
    if not name or "/" in name:
        raise ValueError(f"name must be a non-empty model name without '/', got {name!r}")
    metrics = ServerMetrics(max_batch_size)
    batcher = Batcher(predictor.predict_batch, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms,
                      max_queue=max_queue, observer=metrics)  # fmt: skip
    model = Model(predictor, name, batcher, max_pixels)
    app = FastAPI(title=f"zoo serve: {name}", version=__version__, lifespan=_lifespan(model), docs_url=None,
                  redoc_url=None)  # fmt: skip
    app.state.metrics = metrics
    app.state.model = model

    @app.exception_handler(HTTPError)
    async def http_error(request: Request, error: HTTPError) -> Response:
        LOG.info("%s %d %s", request.scope.get("state", {}).get("request_id", "-"), error.status, error.reason)
        return _error_response(error.status, error.reason, error.headers)

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, error: BodyTooLarge) -> Response:
        return _error_response(413, str(error))

    @app.exception_handler(404)
    async def not_found(request: Request, error: Exception) -> Response:
        return _error_response(404, f"no route {request.url.path}: see /v2/models/{name} and POST /predict")

    @app.exception_handler(405)
    async def not_allowed(request: Request, error: Exception) -> Response:
        return _error_response(405, f"method {request.method} not allowed on {request.url.path}")

    @app.exception_handler(RequestValidationError)
    async def bad_query(request: Request, error: RequestValidationError) -> Response:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ())[1:]) or "query"
        return _error_response(400, f"bad parameter {where}: {first.get('msg', 'invalid')}")

    _routes(app, model)
    app.add_middleware(Guard, metrics=metrics, max_body_bytes=max_body_bytes, api_key=api_key)
    if cors_origin:  # outside the guard: a browser's preflight carries no key
        origins = [cors_origin] if isinstance(cors_origin, str) else list(cors_origin)
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"],
                           allow_headers=["authorization", "content-type", "x-api-key", "x-request-id",
                                          HEADER_LENGTH.lower()])  # fmt: skip
    return app


__all__ = ["FORMATS", "HTTPError", "ImagePredictor", "create_app"]
