"""``zoo serve`` through its command line, as a real process on 127.0.0.1: the Open Inference Protocol v2 with
Triton's own HTTP client, ``/predict`` in its three formats, the page, ``/metrics``, request ids, no CORS."""

from __future__ import annotations

import io
import re

import httpx
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="zoo serve needs the serve extra")
tritonclient_http = pytest.importorskip("tritonclient.http", reason="the protocol tests need tritonclient[http]")
from serve_support import CLASS_NAMES, PALETTE, png, save_tiny_model, start_cli  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from zoo.infer import Predictor  # noqa: E402
from zoo.viz import overlay, with_legend  # noqa: E402

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("serve") / "tiny.pt")


@pytest.fixture(scope="module")
def predictor(model_file):
    return Predictor.from_checkpoint(model_file)


@pytest.fixture(scope="module")
def server(model_file, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve-log") / "server.log"
    process = start_cli(model_file, log, "--max-batch-size", "4", "--max-wait-ms", "5").wait_ready()
    yield process
    assert process.stop() == 0, log.read_text()


@pytest.fixture(scope="module")
def client(server):
    return tritonclient_http.InferenceServerClient(url=f"127.0.0.1:{server.port}")


def _image(seed: int = 0, height: int = 40, width: int = 56) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png(height, width, seed))))


def test_health_and_metadata_through_tritonclient(client) -> None:
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("tiny")
    meta = client.get_model_metadata("tiny")
    assert meta["name"] == "tiny"
    assert meta["parameters"] == {"class_names": CLASS_NAMES, "palette": [list(c) for c in PALETTE]}
    assert {(i["name"], i["datatype"]) for i in meta["inputs"]} == {("image", "BYTES"), ("pixels", "UINT8")}
    with pytest.raises(InferenceServerException, match="unknown model 'other'"):
        client.get_model_metadata("other")


def test_infer_encoded_image_matches_predictor(client, predictor) -> None:
    data = png(40, 56, seed=1)
    image = tritonclient_http.InferInput("image", [1], "BYTES")
    image.set_data_from_numpy(np.array([data], dtype=object))
    outputs = [tritonclient_http.InferRequestedOutput(n) for n in ("mask", "shares")]
    result = client.infer("tiny", [image], outputs=outputs, request_id="r-1")
    mask, shares = result.as_numpy("mask"), result.as_numpy("shares")
    expected = predictor.predict(_image(seed=1))
    assert mask.shape == (1, 40, 56) and mask.dtype == np.uint8
    np.testing.assert_array_equal(mask[0], expected)
    np.testing.assert_allclose(shares[0], np.bincount(expected.ravel(), minlength=3) / expected.size, rtol=1e-6)
    assert result.get_response()["id"] == "r-1"


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_uint8_tensor_matches_predictor(client, predictor, binary) -> None:
    batch = np.stack([_image(seed=2, height=24, width=32), _image(seed=3, height=24, width=32)])
    pixels = tritonclient_http.InferInput("pixels", list(batch.shape), "UINT8")
    pixels.set_data_from_numpy(batch, binary_data=binary)
    output = tritonclient_http.InferRequestedOutput("mask", binary_data=binary)
    mask = client.infer("tiny", [pixels], outputs=[output]).as_numpy("mask")
    np.testing.assert_array_equal(mask, np.stack(predictor.predict_batch(list(batch))))


def test_infer_refuses_a_bad_request_in_one_line(client) -> None:
    wrong = tritonclient_http.InferInput("pixels", [4, 4], "UINT8")
    wrong.set_data_from_numpy(np.zeros((4, 4), np.uint8))
    with pytest.raises(InferenceServerException, match=r"shape must be \[H, W, 3\] or \[N, H, W, 3\], got \[4, 4\]"):
        client.infer("tiny", [wrong])
    text = tritonclient_http.InferInput("image", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"not an image"], dtype=object))
    with pytest.raises(InferenceServerException, match="not an image"):
        client.infer("tiny", [text])


def test_predict_mask_overlay_and_json(server, predictor) -> None:
    data = png(40, 56, seed=4)
    image, expected = _image(seed=4), predictor.predict(_image(seed=4))
    files = {"image": ("photo.png", data, "image/png")}
    mask = httpx.post(f"{server.url}/predict", files=files)
    assert mask.status_code == 200 and mask.headers["content-type"] == "image/png"
    as_png = Image.open(io.BytesIO(mask.content))
    assert as_png.mode == "P" and as_png.getpalette()[:9] == [v for c in PALETTE for v in c]
    np.testing.assert_array_equal(np.asarray(as_png), expected)
    drawn = httpx.post(f"{server.url}/predict", params={"format": "overlay", "opacity": 0.7}, files=files)
    reference = with_legend(overlay(image, expected, PALETTE, 0.7), expected, CLASS_NAMES, PALETTE)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(drawn.content))), reference)
    shares = httpx.post(f"{server.url}/predict", params={"format": "json"}, files=files).json()
    assert (shares["height"], shares["width"]) == (40, 56)
    assert [c["name"] for c in shares["classes"]] == CLASS_NAMES
    counts = np.bincount(expected.ravel(), minlength=3) / expected.size
    np.testing.assert_allclose([c["share"] for c in shares["classes"]], counts, atol=1e-6)


def test_page_is_served_without_external_resources(server) -> None:
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "zoo serve" in page.text and "model tiny" in page.text
    assert re.findall(r"""(?:src|href)=["']?(?:https?:)?//""", page.text) == []  # no CDN: works offline


def test_no_route_names_a_file_and_no_cors_by_default(server) -> None:
    for path in ("/v2/models/..%2F..%2Fetc%2Fpasswd", "/static/../../pyproject.toml", "/v2/models/tiny/../../x"):
        answer = httpx.get(f"{server.url}{path}")
        assert answer.status_code == 404 and "error" in answer.json()
    answer = httpx.get(f"{server.url}/v2/health/live", headers={"Origin": "http://elsewhere.test"})
    assert "access-control-allow-origin" not in answer.headers
    preflight = httpx.options(
        f"{server.url}/predict",
        headers={"Origin": "http://elsewhere.test", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_request_ids_in_answers_and_log(server) -> None:
    answer = httpx.get(f"{server.url}/v2/health/live", headers={"X-Request-ID": "trace-0042"})
    assert answer.headers["x-request-id"] == "trace-0042"
    generated = httpx.get(f"{server.url}/v2/health/live").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{16}", generated)
    spoofed = httpx.get(f"{server.url}/v2/health/live", headers={"X-Request-ID": "bad id\twith spaces"})
    assert spoofed.headers["x-request-id"] != "bad id\twith spaces"
    log = server.log.read_text()
    assert "trace-0042 GET /v2/health/live 200" in log and f"{generated} GET /v2/health/live 200" in log


def test_metrics(server) -> None:
    httpx.post(f"{server.url}/predict", files={"image": ("x.png", png(), "image/png")})
    httpx.post(f"{server.url}/predict", files={"image": ("x.txt", b"hello", "text/plain")})
    text = httpx.get(f"{server.url}/metrics").text
    assert re.search(r'zoo_requests_total\{code="200",route="/predict"\} [1-9]', text)
    assert re.search(r'zoo_requests_total\{code="415",route="/predict"\} [1-9]', text)
    assert re.search(r'zoo_request_seconds_bucket\{le="\+Inf",route="/predict"\} [1-9]', text)
    assert re.search(r"zoo_batch_size_count [1-9]", text)
    assert re.search(r"zoo_queue_depth 0\.0", text)
