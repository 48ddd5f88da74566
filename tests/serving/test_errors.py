"""Every refusal is a JSON {"error", "code"} body with the right status and no internals, and the service
keeps answering afterwards."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest

from .conftest import MAX_BODY_BYTES, MAX_IMAGE_PIXELS, MAX_ITEMS
from .support import (
    ModelUnderTest,
    ServerProcess,
    assert_json_error,
    assert_prediction,
    b64,
    png_bytes,
    raw_http,
)

# (description, status, code, request as httpx.Client.request keyword arguments)
DEFAULT_MAX_TEXT_CHARS = 20_000

Case = tuple[str, int, str | None, Callable[[ModelUnderTest, ModelUnderTest], dict[str, Any]]]


def _big_png() -> bytes:
    side = int(MAX_IMAGE_PIXELS ** 0.5) + 10  # just over the pixel limit, yet a small file
    gradient = np.tile(np.arange(side, dtype=np.uint8), (side, 1))
    return png_bytes(gradient)


CASES: list[Case] = [
    ("not an image (raw body)", 400, "invalid_input",
     lambda image, text: {"content": b"GIF89a but not really", "headers": {"Content-Type": "image/gif"}}),
    ("not an image (multipart)", 400, "invalid_input",
     lambda image, text: {"files": {"file": ("notes.txt", b"just some text", "text/plain")}}),
    ("empty image", 400, "invalid_input",
     lambda image, text: {"files": {"file": ("empty.png", b"", "image/png")}}),
    ("bad base64", 400, "invalid_input", lambda image, text: {"json": {"image": "this is *not* base64!"}}),
    ("text to an image model", 400, "invalid_input",
     lambda image, text: {"json": {"text": "a fine film", "model": image.name}}),
    ("image to a text model", 400, "invalid_input",
     lambda image, text: {"json": {"image": b64(b"xx"), "model": text.name}}),
    ("unknown model (JSON)", 404, "model_not_found",
     lambda image, text: {"json": {"text": "a fine film", "model": "no-such-model"}}),
    ("unknown model (query)", 404, "model_not_found",
     lambda image, text: {"json": {"text": "a fine film"}, "params": {"model": "no-such-model"}}),
    ("unknown route", 404, "not_found", lambda image, text: {"method": "GET", "url": "/no/such/route"}),
    ("wrong method", 405, "method_not_allowed", lambda image, text: {"method": "GET", "url": "/predict"}),
    ("image over the pixel limit", 413, "payload_too_large",
     lambda image, text: {"content": _big_png(), "headers": {"Content-Type": "image/png"}}),
    ("image over the pixel limit (base64)", 413, "payload_too_large",
     lambda image, text: {"json": {"image": [b64(_big_png())]}}),
    ("text/plain", 415, "unsupported_media_type",
     lambda image, text: {"content": b"a fine film", "headers": {"Content-Type": "text/plain"}}),
    ("no content type", 415, "unsupported_media_type", lambda image, text: {"content": b"a fine film"}),
    ("empty JSON object", 422, "invalid_request", lambda image, text: {"json": {}}),
    ("only a model name", 422, "invalid_request", lambda image, text: {"json": {"model": text.name}}),
    ("both text and image", 422, "invalid_request", lambda image, text: {"json": {"text": "x", "image": "eA=="}}),
    ("unknown field", 422, "invalid_request", lambda image, text: {"json": {"txt": "a fine film"}}),
    ("empty text", 422, "invalid_request", lambda image, text: {"json": {"text": ""}}),
    ("blank text", 422, "invalid_request", lambda image, text: {"json": {"text": "   \n\t"}}),
    ("blank text in a list", 422, "invalid_request", lambda image, text: {"json": {"text": ["good", " "]}}),
    ("empty list", 422, "invalid_request", lambda image, text: {"json": {"text": []}}),
    ("text is a number", 422, "invalid_request", lambda image, text: {"json": {"text": 42}}),
    ("bad JSON", 422, "invalid_request",
     lambda image, text: {"content": b'{"text": "unterminated', "headers": {"Content-Type": "application/json"}}),
    ("JSON that is not an object", 422, "invalid_request", lambda image, text: {"json": ["a fine film"]}),
    ("too many texts", 422, "invalid_request", lambda image, text: {"json": {"text": ["fine"] * (MAX_ITEMS + 1)}}),
    ("too many images", 422, "invalid_request",
     lambda image, text: {"json": {"image": [b64(b"x")] * (MAX_ITEMS + 1)}}),
    ("text over the length limit", 422, "invalid_request",
     lambda image, text: {"json": {"text": "a" * (DEFAULT_MAX_TEXT_CHARS + 1)}}),
    ("top_k zero (query)", 422, "invalid_request",
     lambda image, text: {"json": {"text": "fine"}, "params": {"top_k": 0}}),
    ("top_k not a number (query)", 422, "invalid_request",
     lambda image, text: {"json": {"text": "fine"}, "params": {"top_k": "many"}}),
    ("top_k zero (JSON)", 422, "invalid_request", lambda image, text: {"json": {"text": "fine", "top_k": 0}}),
    ("multipart without a file", 422, "invalid_request",
     lambda image, text: {"data": {"model": "x"}, "files": {"other": ("a.png", b"x", "image/png")}}),
    ("multipart top_k zero", 422, "invalid_request",
     lambda image, text: {"data": {"top_k": "0"}, "files": {"file": ("a.png", b"x", "image/png")}}),
]


@pytest.mark.parametrize(("description", "status", "code", "make"), CASES, ids=[case[0] for case in CASES])
def test_error_is_json_and_service_goes_on(http: httpx.Client, image_model: ModelUnderTest,
                                           text_model: ModelUnderTest, description: str, status: int,
                                           code: str | None, make: Callable[..., dict[str, Any]]) -> None:
    request = {"method": "POST", "url": "/predict", **make(image_model, text_model)}
    assert_json_error(http.request(**request), status, code)
    assert http.get("/health/ready").status_code == 200


def test_too_many_files_in_multipart_is_422(http: httpx.Client) -> None:
    """Too many images is the same malformed request (422) whether they come as JSON or as files."""
    as_json = http.post("/predict", json={"image": [b64(b"x")] * (MAX_ITEMS + 1)})
    assert_json_error(as_json, 422, "invalid_request")
    files = [("file", (f"{i}.png", b"x", "image/png")) for i in range(MAX_ITEMS + 1)]
    assert_json_error(http.post("/predict", files=files), 422, "invalid_request")


def test_body_over_limit_without_content_length(server: ServerProcess) -> None:
    """A chunked body (no Content-Length) is cut off at the limit too."""
    head = (b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    chunk = b"\0" * 65536
    parts = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * (MAX_BODY_BYTES // len(chunk) + 2) + [b"0\r\n\r\n"]
    assert_json_error(raw_http(server.port, head, parts), 413, "payload_too_large")


def test_declared_body_over_limit_is_refused_before_reading(server: ServerProcess) -> None:
    head = (b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (MAX_BODY_BYTES + 1))
    assert_json_error(raw_http(server.port, head, [b"\0" * 1024]), 413, "payload_too_large")


def test_body_at_the_limit_is_read(server: ServerProcess) -> None:
    """Exactly MAX_BODY_BYTES is allowed: the refusal is for not-an-image (400), not for size."""
    head = (b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % MAX_BODY_BYTES)
    assert_json_error(raw_http(server.port, head, [b"\0" * MAX_BODY_BYTES]), 400, "invalid_input")


def test_service_still_answers_after_errors(http: httpx.Client, image_model: ModelUnderTest,
                                            text_model: ModelUnderTest, digits: list[bytes],
                                            reviews: list[str]) -> None:
    response = http.post("/predict", files={"file": ("d.png", digits[7], "image/png")})
    assert response.status_code == 200, response.text
    assert_prediction(response.json(), image_model.image_probabilities(digits[7]), image_model.labels, 5)
    response = http.post("/predict", json={"text": reviews[3]})
    assert response.status_code == 200, response.text
    assert_prediction(response.json(), text_model.text_probabilities(reviews[3]), text_model.labels, 5)
