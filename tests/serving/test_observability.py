"""Request ids on every response and in every log line about the request, JSON logs by setting, and logs
that hold no keys and no request bodies."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import MAX_BODY_BYTES
from .support import ModelUnderTest, ServerProcess, b64, raw_http

GENERATED_ID = re.compile(r"[0-9a-f]{32}")
KEYS = ("log-test-key-6a1f09", "log-test-key-rotated-27cc")
WRONG_KEY = "wrong-key-e5d4c3b2"
BODY_MARKER = "body-marker-4f8e2d"


def test_every_response_has_a_request_id(server: ServerProcess, http: httpx.Client, image_model: ModelUnderTest,
                                         digits: list[bytes], reviews: list[str]) -> None:
    infer = {"inputs": [{"name": "pixel_values", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.0] * 784}]}
    responses = [
        http.post("/predict", files={"file": ("d.png", digits[0], "image/png")}),
        http.post("/predict", json={"text": reviews[0]}),
        http.post(f"/v2/models/{image_model.name}/infer", json=infer),
        http.post("/predict", content=b"not an image", headers={"Content-Type": "image/png"}),
        http.post("/predict", json={"text": "fine", "model": "no-such-model"}),
        http.post("/predict", json={}),
        http.get("/predict"),
        http.get("/no/such/route"),
        http.get("/health"), http.get("/health/ready"), http.get("/metrics"), http.get("/v2/health/live"),
        http.get("/models"), http.get("/openapi.json"), http.get("/docs"),
        raw_http(server.port, b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                              b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (MAX_BODY_BYTES + 1)),
        raw_http(server.port, _oversized_head()),  # answered by the HTTP protocol itself, before the app
    ]
    assert {response.status_code for response in responses} >= {200, 400, 404, 405, 413, 422, 431}
    ids = [response.headers.get("x-request-id", "") for response in responses]
    assert all(GENERATED_ID.fullmatch(request_id) for request_id in ids), ids
    assert len(set(ids)) == len(ids), ids


def _oversized_head(request_id: str | None = None) -> bytes:
    """A request whose headers are over SERVE_MAX_HEADER_BYTES (64 KiB by default): it gets 431."""
    given = b"X-Request-ID: %s\r\n" % request_id.encode() if request_id is not None else b""
    return (b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n" + given
            + b"X-Filler: %s\r\nConnection: close\r\n\r\n" % (b"x" * 70_000))


@pytest.mark.parametrize("given", ["trace-7", "0af7651916cd43dd8448eb211c80319c", "req:42/a+b=c@edge.example",
                                   "x" * 128])
def test_a_usable_client_id_is_kept(server: ServerProcess, http: httpx.Client, given: str) -> None:
    too_large = raw_http(server.port, _oversized_head(given))
    assert too_large.status_code == 431
    for response in (http.get("/health/live", headers={"X-Request-ID": given}),
                     http.post("/predict", json={}, headers={"X-Request-ID": given}), too_large):
        assert response.headers["x-request-id"] == given


@pytest.mark.parametrize("given", ["", "x" * 129, "two words", 'quote"d', "new\\nline", "tab\there", "caf\u00e9"])
def test_an_unusable_client_id_is_replaced(http: httpx.Client, given: str) -> None:
    response = http.get("/health/live", headers={"X-Request-ID": given.encode()})
    assert GENERATED_ID.fullmatch(response.headers["x-request-id"]), response.headers


def test_success_is_not_logged_by_default(server: ServerProcess, http: httpx.Client, reviews: list[str]) -> None:
    """At the default settings (text, info, no access log) a request that succeeds, or is refused, writes no
    log line: logging stays off the hot path."""
    ids = [f"quiet-{number}" for number in range(5)]
    for request_id in ids:
        assert http.post("/predict", json={"text": reviews[1]}, headers={"X-Request-ID": request_id}).status_code == 200
        assert http.post("/predict", json={}, headers={"X-Request-ID": request_id + "-refused"}).status_code == 422
    log = server.log()
    assert not [request_id for request_id in ids if request_id in log], log


@pytest.fixture(scope="module")
def json_logging_server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path, image_model: ModelUnderTest,
                        text_model: ModelUnderTest) -> Iterator[ServerProcess]:
    """Everything logged that can be: JSON at debug level, with uvicorn's access log."""
    process = ServerProcess(models_dir, tmp_path_factory.mktemp("json-logs"), {
        "SERVE_MODELS": f"{image_model.name},{text_model.name}", "SERVE_LOG_FORMAT": "json",
        "SERVE_LOG_LEVEL": "debug", "SERVE_ACCESS_LOG": "true", "SERVE_API_KEY": KEYS[0], "SERVE_API_KEYS": KEYS[1],
    })
    process.start().wait_ready()
    yield process
    process.stop()


def log_records(server: ServerProcess) -> list[dict[str, Any]]:
    """Every line of the server's log, each of which must be a JSON object."""
    records = []
    for line in server.log_path.read_text().splitlines():
        record = json.loads(line)
        assert isinstance(record, dict), line
        assert {"time", "level", "logger", "message"} <= set(record), record
        records.append(record)
    return records


def test_json_logs_carry_request_ids_and_no_secrets(json_logging_server: ServerProcess, digits: list[bytes]) -> None:
    image = b64(digits[3])
    with json_logging_server.client() as client:
        answered = [
            client.post("/predict", json={"text": f"{BODY_MARKER} a lovely, moving film"},
                        headers={"X-API-Key": KEYS[0], "X-Request-ID": "client-trace-1"}),
            client.post("/predict", json={"image": image}, headers={"Authorization": f"Bearer {KEYS[1]}"}),
        ]
        refused = [
            client.post("/predict", json={"text": BODY_MARKER}, headers={"X-API-Key": WRONG_KEY}),
            client.post("/predict", json={"text": BODY_MARKER}, headers={"Authorization": f"Bearer {WRONG_KEY}"}),
            client.post("/predict", json={"txt": BODY_MARKER}, headers={"X-API-Key": KEYS[0]}),
            client.post("/predict", content=BODY_MARKER.encode(), headers={"X-API-Key": KEYS[0],
                                                                           "Content-Type": "image/png"}),
            client.get("/no/such/route", headers={"X-API-Key": KEYS[1]}),
        ]
    assert [response.status_code for response in answered] == [200, 200]
    assert [response.status_code for response in refused] == [401, 401, 422, 400, 404]
    assert answered[0].headers["x-request-id"] == "client-trace-1"
    json_logging_server.stop()  # everything is written

    records = log_records(json_logging_server)
    for response in answered + refused:
        request_id = response.headers["x-request-id"]
        about = [record for record in records if record.get("request_id") == request_id]
        assert any(record["logger"] == "uvicorn.access" and f" {response.status_code}" in record["message"]
                   for record in about), (request_id, about)
        if response.status_code >= 400:  # refusals are explained at debug level
            assert any(record["logger"] == "app.transport.http.errors" and record["level"] == "DEBUG" for record in about), about
    assert all("request_id" not in record for record in records
               if record["logger"] in ("app.models.served_model", "app.models.loading"))
    text = json_logging_server.log_path.read_text()
    for secret in (*KEYS, WRONG_KEY, BODY_MARKER, image[100:140], "lovely"):
        assert secret not in text, f"{secret!r} is in the log"
