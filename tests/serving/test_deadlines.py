"""Deadlines a client sets: `X-Request-Timeout` (milliseconds), capped by `SERVE_REQUEST_TIMEOUT_S`.

A request still queued at its deadline answers 503 `deadline_exceeded` (with `Retry-After`) and never runs,
the same on `/predict` and `/v2`; a bad header is a 422; a deadline longer than the server's changes nothing.
A request whose client closed its connection while it was queued is not run either (499 `client_disconnected`
in `/metrics`).
"""

from __future__ import annotations

import http.client
import json
from pathlib import Path

import httpx
import pytest

from .conftest import StartServer
from .support import ModelUnderTest, assert_json_error, assert_prediction, scrape, value

HOLD_MS = 1500  # the batcher holds a lone request this long for batch-mates: longer than the client's deadline


@pytest.fixture
def holding_server(start_server: StartServer, models_dir: Path, image_model: ModelUnderTest) -> httpx.Client:
    server = start_server(models_dir, SERVE_MODELS=image_model.name, SERVE_MAX_BATCH_WAIT_MS=str(HOLD_MS),
                          SERVE_BATCH_SIZE_SEARCH="false", SERVE_REQUEST_TIMEOUT_S="10")
    server.wait_ready()
    return server.client()


def test_a_request_queued_past_the_clients_deadline_is_503_and_never_runs(
    holding_server: httpx.Client, image_model: ModelUnderTest, digits: list[bytes],
) -> None:
    with holding_server as client:
        before = scrape(client)
        upload = {"file": ("digit.png", digits[0], "image/png")}
        expired = client.post("/predict", files=upload, headers={"X-Request-Timeout": "200"})
        assert_json_error(expired, 503, "deadline_exceeded")
        assert "retry-after" in expired.headers
        assert expired.elapsed.total_seconds() < HOLD_MS / 1000, "the answer came after the batching window"
        pixels = image_model.image_tensor(digits[0])
        v2 = client.post(f"/v2/models/{image_model.name}/infer", headers={"X-Request-Timeout": "200"}, json={
            "inputs": [{"name": image_model.config.inputs[0].name, "shape": [1, *pixels.shape], "datatype": "FP32",
                        "data": pixels.ravel().tolist()}]})
        assert_json_error(v2, 503, "deadline_exceeded")
        after = scrape(client)
        ran = value(after, "modelserver_batch_size_count", model=image_model.name) - value(
            before, "modelserver_batch_size_count", model=image_model.name)
        assert ran == 0, "a request past its deadline was run"

        answered = client.post("/predict", files=upload, headers={"X-Request-Timeout": "60000"})
        assert answered.status_code == 200, answered.text
        assert_prediction(answered.json(), image_model.image_probabilities(digits[0]), image_model.labels, 5)


@pytest.mark.parametrize("header", ["0", "-5", "soon", "nan", "inf"])
def test_a_bad_timeout_header_is_422(http: httpx.Client, digits: list[bytes], header: str) -> None:
    response = http.post("/predict", params={"model": "mnist-cnn"}, headers={"X-Request-Timeout": header},
                         files={"file": ("digit.png", digits[0], "image/png")})
    assert_json_error(response, 422)


def test_a_request_whose_client_left_while_queued_never_runs(
    start_server: StartServer, models_dir: Path, image_model: ModelUnderTest, digits: list[bytes],
) -> None:
    """The client closing its connection is the other way of giving up: the request is dropped when its batch
    forms, counted as `client_disconnected` (status 499), and the requests of clients that stayed still run."""
    hold_ms = 3000  # room to send every request, see them queued and close some connections
    server = start_server(models_dir, SERVE_MODELS=image_model.name, SERVE_MAX_BATCH_WAIT_MS=str(hold_ms),
                          SERVE_BATCH_SIZE_SEARCH="false", SERVE_REQUEST_TIMEOUT_S="30")
    server.wait_ready()
    pixels = image_model.image_tensor(digits[0])
    v2_body = json.dumps({"inputs": [{"name": image_model.config.inputs[0].name, "shape": [1, *pixels.shape],
                                      "datatype": "FP32", "data": pixels.ravel().tolist()}]})

    def send(path: str, body: bytes | str, content_type: str) -> http.client.HTTPConnection:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        connection.request("POST", path, body, {"Content-Type": content_type})
        return connection

    predict_path = f"/predict?model={image_model.name}"
    staying = [send(predict_path, digits[index], "image/png") for index in range(3)]
    leaving = [send(predict_path, digits[index], "image/png") for index in range(3, 7)]
    leaving.append(send(f"/v2/models/{image_model.name}/infer", v2_body, "application/json"))
    with server.client() as client:
        before = scrape(client)
        queued = len(staying) + len(leaving)
        server.wait_for(lambda probe: value(scrape(probe), "modelserver_queue_depth", model=image_model.name)
                        == queued, hold_ms / 1000, what=f"{queued} requests queued")
        for connection in leaving:
            connection.close()
        for index, connection in enumerate(staying):
            response = connection.getresponse()
            assert response.status == 200, response.read()
            assert_prediction(json.loads(response.read()), image_model.image_probabilities(digits[index]),
                              image_model.labels, 5)
            connection.close()
        after = scrape(client)

    def change(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert change("modelserver_batch_size_sum", model=image_model.name) == len(staying), "a left request ran"
    assert change("modelserver_errors_total", model=image_model.name, kind="client_disconnected") == len(leaving)
