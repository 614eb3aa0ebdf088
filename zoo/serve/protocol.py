"""The Open Inference Protocol (KServe v2) as the zoo speaks it: model metadata, infer requests and responses.

This module is plain Python (no web framework): it turns a request body into images and a list of wanted outputs,
and the masks back into a response body, in JSON or with the binary tensor data extension that Triton's clients
use by default (``Inference-Header-Content-Length``: a JSON header, then each tensor's raw bytes in order).

Inputs (exactly one per request):

- ``image``, ``BYTES``, shape ``[N]``: N encoded image files (PNG, JPEG, ...); in JSON, base64 strings.
- ``pixels``, ``UINT8``, shape ``[H, W, 3]`` or ``[N, H, W, 3]``: RGB pixels.

Outputs: ``mask`` (``UINT8``, or ``INT32`` above 256 classes; ``[N, H, W]``, or ``[H, W]`` for a ``[H, W, 3]``
input) and, when asked for, ``shares`` (``FP32``, ``[N, C]``: each class's fraction of the pixels). Without an
``outputs`` list only ``mask`` is returned.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DATATYPES = {"UINT8": np.uint8, "INT32": np.int32, "FP32": np.float32}
OUTPUTS = ("mask", "shares")
HEADER_LENGTH = "Inference-Header-Content-Length"


class ProtocolError(ValueError):
    """A request the protocol cannot interpret; the message is the one-line reason sent back (400)."""


@dataclass
class InferRequest:
    """A parsed infer request.

    Args:
        id: the request's ``id`` (echoed back), or None.
        images: encoded image files (``BYTES`` input) ...
        pixels: ... or RGB arrays (``UINT8`` input); exactly one of the two is non-empty.
        single: the input was one ``[H, W, 3]`` image (the mask comes back as ``[H, W]``).
        outputs: output name -> whether to send it as binary data.
    """

    id: str | None
    images: list[bytes] = field(default_factory=list)
    pixels: list[np.ndarray] = field(default_factory=list)
    single: bool = False
    outputs: dict[str, bool] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.images) or len(self.pixels)


def model_metadata(name: str, class_names: Sequence[str], palette: Sequence[Sequence[int]]) -> dict[str, Any]:
    """``GET /v2/models/{name}``: inputs, outputs, and the classes' names and colours as parameters."""
    mask_type = "UINT8" if len(class_names) <= 256 else "INT32"
    return {
        "name": name,
        "versions": ["1"],
        "platform": "pytorch_zoo",
        "inputs": [
            {"name": "image", "datatype": "BYTES", "shape": [-1]},
            {"name": "pixels", "datatype": "UINT8", "shape": [-1, -1, -1, 3]},
        ],
        "outputs": [
            {"name": "mask", "datatype": mask_type, "shape": [-1, -1, -1]},
            {"name": "shares", "datatype": "FP32", "shape": [-1, len(class_names)]},
        ],
        "parameters": {"class_names": list(class_names), "palette": [list(map(int, c)) for c in palette]},
    }


def _split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    """The JSON header and the binary rest of a body."""
    if header_length is None:
        size = len(body)
    else:
        try:
            size = int(header_length)
        except ValueError:
            raise ProtocolError(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
        if not 0 < size <= len(body):
            raise ProtocolError(f"{HEADER_LENGTH} {size} does not fit a body of {len(body)} bytes")
    try:
        header = json.loads(body[:size])
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ProtocolError(f"the request is not valid JSON ({error})") from None
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise ProtocolError('the request needs an "inputs" list (Open Inference Protocol v2)')
    return header, body[size:]


def _byte_elements(raw: bytes) -> list[bytes]:
    """Triton's binary BYTES layout: each element as a little-endian uint32 length, then its bytes."""
    out, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise ProtocolError("BYTES input: the binary data ends inside an element's length")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise ProtocolError("BYTES input: the binary data ends inside an element")
        out.append(bytes(raw[offset : offset + length]))
        offset += length
    return out


def _base64_elements(data: Any) -> list[bytes]:
    if not isinstance(data, list) or not all(isinstance(d, str) for d in data):
        raise ProtocolError('BYTES input in JSON: "data" must be a list of base64 strings')
    try:
        return [base64.b64decode(d, validate=True) for d in data]
    except binascii.Error:
        raise ProtocolError('BYTES input in JSON: "data" must be base64 strings (binary data is not UTF-8)') from None


def _shape(tensor: dict[str, Any]) -> list[int]:
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise ProtocolError(f'input {tensor.get("name")!r}: "shape" must be a list of sizes')
    return shape


def _pixels(tensor: dict[str, Any], raw: bytes | None) -> tuple[list[np.ndarray], bool]:
    shape = _shape(tensor)
    if len(shape) not in (3, 4) or shape[-1] != 3:
        raise ProtocolError(f"UINT8 input: shape must be [H, W, 3] or [N, H, W, 3], got {shape}")
    if raw is not None:
        flat = np.frombuffer(raw, dtype=np.uint8)
    else:
        try:
            flat = np.asarray(tensor.get("data"), dtype=np.int64).ravel()
        except (TypeError, ValueError):
            raise ProtocolError('UINT8 input in JSON: "data" must be a list of integers 0..255') from None
        if flat.size and (flat.min() < 0 or flat.max() > 255):
            raise ProtocolError("UINT8 input: values must be in 0..255")
        flat = flat.astype(np.uint8)
    if flat.size != int(np.prod(shape)):
        raise ProtocolError(f"UINT8 input: {flat.size} values do not fill shape {shape}")
    array = flat.reshape(shape)
    return ([array] if len(shape) == 3 else list(array)), len(shape) == 3


def _wanted_outputs(header: dict[str, Any]) -> dict[str, bool]:
    default_binary = bool((header.get("parameters") or {}).get("binary_data_output", False))
    requested = header.get("outputs")
    if not requested:
        return {"mask": default_binary}
    wanted = {}
    for output in requested:
        name = output.get("name") if isinstance(output, dict) else None
        if name not in OUTPUTS:
            raise ProtocolError(f"unknown output {name!r}: choose from {', '.join(OUTPUTS)}")
        wanted[name] = bool((output.get("parameters") or {}).get("binary_data", default_binary))
    return wanted


def parse_infer_request(body: bytes, header_length: str | None = None) -> InferRequest:
    """Parse a ``POST /v2/models/{name}/infer`` body.

    Args:
        body: the request body.
        header_length: the ``Inference-Header-Content-Length`` header, or None for a JSON-only body.

    Raises:
        ProtocolError: the one-line reason the request cannot be read.
    """
    header, binary = _split_body(body, header_length)
    if len(header["inputs"]) != 1 or not isinstance(header["inputs"][0], dict):
        raise ProtocolError('send exactly one input: "image" (BYTES, encoded files) or "pixels" (UINT8, RGB)')
    tensor = header["inputs"][0]
    size = (tensor.get("parameters") or {}).get("binary_data_size")
    if size is not None and (not isinstance(size, int) or size < 0 or size > len(binary)):
        raise ProtocolError(f"binary_data_size {size!r} does not fit the {len(binary)} bytes after the JSON header")
    raw = binary[:size] if size is not None else None
    request = InferRequest(id=header.get("id"), outputs=_wanted_outputs(header))
    datatype, name = tensor.get("datatype"), tensor.get("name")
    if (name, datatype) == ("image", "BYTES"):
        request.images = _byte_elements(raw) if raw is not None else _base64_elements(tensor.get("data"))
        if len(request.images) != int(np.prod(_shape(tensor))):
            raise ProtocolError(f"BYTES input: {len(request.images)} elements do not fill shape {tensor['shape']}")
    elif (name, datatype) == ("pixels", "UINT8"):
        request.pixels, request.single = _pixels(tensor, raw)
    else:
        raise ProtocolError(f'unknown input {name!r} of type {datatype!r}: use "image" BYTES or "pixels" UINT8')
    if request.count == 0:
        raise ProtocolError("the input holds no image")
    return request


def class_shares(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Each class's fraction of the pixels of ``mask`` (``num_classes`` float32 values summing to 1)."""
    counts = np.bincount(mask.ravel().astype(np.int64), minlength=num_classes)[:num_classes]
    return (counts / max(mask.size, 1)).astype(np.float32)


def _tensor(name: str, array: np.ndarray, binary: bool, chunks: list[bytes]) -> dict[str, Any]:
    datatype = next(k for k, v in DATATYPES.items() if array.dtype == v)
    out: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
    if binary:
        data = np.ascontiguousarray(array).tobytes()
        out["parameters"] = {"binary_data_size": len(data)}
        chunks.append(data)
    else:
        out["data"] = array.ravel().tolist()
    return out


def infer_response(
    request: InferRequest, masks: Sequence[np.ndarray], num_classes: int, model_name: str
) -> tuple[bytes, dict[str, str]]:
    """The response body and headers for ``request``'s masks (binary extension when any output asks for it)."""
    if len({m.shape for m in masks}) > 1 and not request.single:
        raise ProtocolError("images of different sizes give masks that do not stack: send them one per request")
    mask = masks[0] if request.single else np.stack(masks)
    arrays = {"mask": mask.astype(np.int32 if mask.dtype != np.uint8 else np.uint8)}
    if "shares" in request.outputs:
        arrays["shares"] = np.stack([class_shares(m, num_classes) for m in masks])
    chunks: list[bytes] = []
    outputs = [_tensor(name, arrays[name], binary, chunks) for name, binary in request.outputs.items()]
    result: dict[str, Any] = {"model_name": model_name, "model_version": "1", "outputs": outputs}
    if request.id is not None:
        result["id"] = request.id
    header = json.dumps(result, separators=(",", ":")).encode()
    if not chunks:
        return header, {"content-type": "application/json"}
    return header + b"".join(chunks), {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(header))}


__all__ = ["HEADER_LENGTH", "InferRequest", "ProtocolError", "class_shares", "infer_response", "model_metadata",
           "parse_infer_request"]  # fmt: skip
