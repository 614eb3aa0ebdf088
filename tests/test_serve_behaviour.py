"""``zoo serve`` under bad input, overload, a failing model, SIGTERM, an API key and CORS: real processes on
127.0.0.1 running the embedding entry point (:func:`zoo.serve.serve`) with a predictor that fails or stalls on
purpose (``tests/serve_support.py``); the batching queue, the request parser and the flags' checks in-process."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

pytest.importorskip("fastapi", reason="zoo serve needs the serve extra")
from serve_support import (  # noqa: E402
    FAIL_HEIGHT,
    SLOW_HEIGHT,
    bomb_png,
    png,
    save_tiny_model,
    start_cli,
    start_embedded,
)

from zoo.cli import main  # noqa: E402
from zoo.cli.serve import read_api_key  # noqa: E402
from zoo.serve.batching import Batcher, QueueFull  # noqa: E402
from zoo.serve.protocol import ProtocolError, parse_infer_request  # noqa: E402
from zoo.serve.server import exposed_without_key  # noqa: E402

pytestmark = pytest.mark.timeout(120)
KEY = "s3cret-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
ORIGIN = "http://app.example.test"


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("serve") / "tiny.pt")


@pytest.fixture(scope="module")
def server(model_file, tmp_path_factory):
    options = {"name": "tiny", "api_key": KEY, "cors_origin": ORIGIN, "max_queue": 2, "max_batch_size": 2,
               "max_wait_ms": 20, "max_body_bytes": 200_000}  # fmt: skip
    log = tmp_path_factory.mktemp("serve-log") / "server.log"
    process = start_embedded(model_file, log, **options).wait_ready(AUTH)
    yield process
    assert process.stop() == 0, log.read_text()


def _post(server, data: bytes, *, name: str = "photo.png", **kwargs) -> httpx.Response:
    return httpx.post(f"{server.url}/predict", files={"image": (name, data)}, headers=AUTH, timeout=30, **kwargs)


def test_api_key_is_required_everywhere_but_the_page(server) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": KEY[:-1]}):
        answer = httpx.get(f"{server.url}/v2/health/ready", headers=headers)
        assert answer.status_code == 401 and answer.json() == {"error": "missing or wrong API key: send "
                                                                         "'Authorization: Bearer KEY'"}  # fmt: skip
    assert httpx.get(f"{server.url}/v2/health/ready", headers={"X-API-Key": KEY}).status_code == 200
    assert httpx.post(f"{server.url}/predict", files={"image": ("x.png", png())}).status_code == 401
    assert httpx.get(f"{server.url}/").status_code == 200


BAD_INPUTS = {
    "text": (b"just some text\n", 415, "not an image: send a PNG, JPEG, BMP, TIFF or WebP file"),
    "truncated": (png(64, 64)[:300], 400, "truncated or corrupt PNG image"),
    "empty": (b"", 400, "empty body: send an image file"),
    "bomb": (bomb_png(), 400, "image too large"),
}


@pytest.mark.parametrize("kind", BAD_INPUTS)
def test_bad_input_is_refused_in_one_line_and_the_server_goes_on(server, kind) -> None:
    data, status, reason = BAD_INPUTS[kind]
    answer = _post(server, data)
    assert answer.status_code == status
    assert answer.json()["error"].startswith(reason) and "\n" not in answer.json()["error"]
    if kind == "bomb":
        assert "(1600000000 pixels)" in answer.json()["error"]  # 40000 x 40000, refused from the header
    assert _post(server, png()).status_code == 200


def test_body_over_the_limit_is_413(server) -> None:
    big = b"\0" * 300_000
    answer = httpx.post(f"{server.url}/predict", content=big, headers=AUTH)
    assert answer.status_code == 413 and answer.json()["error"] == "request body over the limit of 200000 bytes"

    def chunks():  # no Content-Length: cut off while reading
        for _ in range(30):
            yield b"\0" * 10_000

    answer = httpx.post(f"{server.url}/v2/models/tiny/infer", content=chunks(), headers=AUTH)
    assert answer.status_code == 413
    assert _post(server, png()).status_code == 200


def test_full_queue_answers_503_with_retry_after_and_a_model_error_fails_its_batch_only(server) -> None:
    with ThreadPoolExecutor(8) as pool:
        slow = pool.submit(_post, server, png(SLOW_HEIGHT, 20))  # runs alone for 1.5 s
        time.sleep(0.5)
        failing = pool.submit(_post, server, png(FAIL_HEIGHT, 20))  # queued with the next one: one batch
        time.sleep(0.05)
        partner = pool.submit(_post, server, png(FAIL_HEIGHT + 1, 20))
        time.sleep(0.05)
        refused = [pool.submit(_post, server, png(20, 20, seed=i)) for i in range(4)]  # the queue holds 2
        answers = [f.result() for f in refused]
        assert slow.result().status_code == 200
        assert failing.result().status_code == 500 and partner.result().status_code == 500
    assert failing.result().json()["error"] == "model error: RuntimeError: injected fault"
    assert [a.status_code for a in answers] == [503] * 4
    assert all(int(a.headers["retry-after"]) >= 1 for a in answers)
    assert answers[0].json()["error"].startswith("server busy: 2 of 2 places in the queue are taken")
    assert _post(server, png(20, 20)).status_code == 200


def test_cors_only_for_the_origin_given(server) -> None:
    preflight = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization",
    }
    answer = httpx.options(f"{server.url}/predict", headers=preflight)
    assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == ORIGIN
    other = httpx.get(f"{server.url}/v2/health/live", headers={**AUTH, "Origin": "http://evil.test"})
    assert "access-control-allow-origin" not in other.headers


@pytest.mark.slow  # a second server process; every module's server is also stopped by SIGTERM and must exit 0
def test_sigterm_drains_requests_in_flight_and_exits_0(model_file, tmp_path) -> None:
    process = start_embedded(model_file, tmp_path / "server.log", max_batch_size=1).wait_ready()
    result = {}
    thread = threading.Thread(target=lambda: result.update(answer=_post(process, png(SLOW_HEIGHT, 20))))
    thread.start()
    time.sleep(0.6)  # the slow batch is running
    code = process.stop()
    thread.join(30)
    assert result["answer"].status_code == 200
    assert code == 0, process.log.read_text()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{process.url}/v2/health/live")


def test_batcher_batches_bounds_and_isolates() -> None:
    calls = []

    def fn(items):
        calls.append(list(items))
        if "bad" in items:
            raise ValueError("bad item")
        return [item.upper() for item in items]

    async def scenario():
        batcher = Batcher(fn, max_batch_size=3, max_wait_ms=50, max_queue=4)
        await batcher.start()
        first = await asyncio.gather(*(batcher.submit(x) for x in "abcd"))
        with pytest.raises(QueueFull):
            await batcher.submit_many(list("vwxyz"))
        mixed = await asyncio.gather(batcher.submit("bad"), batcher.submit("e"), return_exceptions=True)
        after = await batcher.submit("f")
        await batcher.stop()
        return first, mixed, after

    first, mixed, after = asyncio.run(scenario())
    assert first == list("ABCD") and calls[:2] == [list("abc"), ["d"]]
    assert isinstance(mixed[0], ValueError) and isinstance(mixed[1], ValueError)  # one batch, both failed
    assert after == "F" and calls[-1] == ["f"]


@pytest.mark.parametrize(
    "body, header, reason",
    [
        (b"{", None, "the request is not valid JSON"),
        (b'{"inputs": []}', None, "send exactly one input"),
        (json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["%%"]}]}).encode(),
         None, "base64 strings"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]}', None, "unknown input 'x' of type 'FP32'"),
        (b'{"inputs": [1]}xx', "99", "Inference-Header-Content-Length 99 does not fit a body of 17 bytes"),
    ],
)  # fmt: skip
def test_protocol_errors_name_the_problem(body, header, reason) -> None:
    with pytest.raises(ProtocolError, match=reason.replace("[", r"\[")):
        parse_infer_request(body, header)


def test_exposed_host_warning_and_key_file(tmp_path, capsys) -> None:
    assert "without an API key" in exposed_without_key("0.0.0.0", None)
    assert exposed_without_key("0.0.0.0", "k") is None
    assert exposed_without_key("127.0.0.1", None) is None and exposed_without_key("::1", None) is None
    key = tmp_path / "key"
    key.write_text(" abc \n")
    assert read_api_key(key) == "abc"
    key.write_text("")
    assert main(["serve", "--checkpoint", "m.pt", "--api-key-file", str(key)]) == 2
    assert f"--api-key-file {key}: the file must hold one key" in capsys.readouterr().err
    assert main(["serve", "--checkpoint", "deeplab-tf:nope"]) == 2  # a published model's name, checked offline
    assert capsys.readouterr().err.startswith("zoo serve: error: unknown TF DeepLab model 'nope'; known: ")


@pytest.mark.slow  # three processes
def test_workers_serve_and_stop_together(model_file, tmp_path) -> None:
    process = start_cli(model_file, tmp_path / "server.log", "--workers", "2").wait_ready()
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda i: _post(process, png(20, 20, seed=i)).status_code, range(8)))
    assert answers == [200] * 8
    assert process.stop() == 0
    workers = {line.split("zoo.serve[")[1].split("]")[0] for line in process.log.read_text().splitlines()
               if "POST /predict 200" in line}  # fmt: skip
    assert 1 <= len(workers) <= 2  # each line names the worker process that answered
