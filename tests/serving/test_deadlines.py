"""Deadlines a client sets: `X-Request-Timeout` (milliseconds), capped by `SERVE_REQUEST_TIMEOUT_S`.

A request still queued at its deadline answers 503 `deadline_exceeded` (with `Retry-After`) and never runs,
the same on `/predict` and `/v2`; a bad header is a 422; a deadline longer than the server's changes nothing.
A request whose client closed its connection while it was queued is not run either (499 `client_disconnected`
in `/metrics`).

Deadlines count from the request's arrival at the machine, not from when the server read it: time spent unread
in the kernel's accept queue and socket buffer (a process that is behind, or paused) counts. A model request
that waited unread longer than `SERVE_OVERLOAD_WAIT_S` answers 503 `overloaded` before any work is done.
The tests pause the server with SIGSTOP: the kernel still accepts connections and buffers their requests.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from .conftest import StartServer
from .support import ModelUnderTest, ServerProcess, assert_json_error, assert_prediction, scrape, value

needs_tcp_info = pytest.mark.skipif(not hasattr(socket, "TCP_INFO"),
                                    reason="the wait before a request is read is known on Linux only (TCP_INFO)")

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


PAUSE_S = 0.8  # how long the server stays paused while requests wait for it


def send_while_paused(server: ServerProcess, requests: list[Callable[[], http.client.HTTPConnection]]
                      ) -> list[http.client.HTTPConnection]:
    """Pause the server, send `requests` (each a function that opens a connection and sends one), wait
    PAUSE_S, and let the server go on: each request waited about that long unread."""
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        connections = [send() for send in requests]
        time.sleep(PAUSE_S)
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    return connections


def sender(server: ServerProcess, path: str, body: bytes | str | None = None, content_type: str | None = None,
           headers: dict[str, str] | None = None) -> Callable[[], http.client.HTTPConnection]:
    """A function that opens a connection and sends one request: a POST of `body`, or a GET without one."""
    def send() -> http.client.HTTPConnection:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        if body is None:
            connection.request("GET", path, headers=headers or {})
        else:
            connection.request("POST", path, body, {"Content-Type": content_type or "", **(headers or {})})
        return connection
    return send


def answer(connection: http.client.HTTPConnection) -> httpx.Response:
    """The response on `connection`, as an httpx.Response for the shared assertions."""
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return httpx.Response(response.status, headers=response.getheaders(), content=body)


@needs_tcp_info
def test_time_waiting_unread_counts_toward_the_deadline(
    start_server: StartServer, models_dir: Path, image_model: ModelUnderTest, digits: list[bytes],
) -> None:
    server = start_server(models_dir, SERVE_MODELS=image_model.name, SERVE_REQUEST_TIMEOUT_S="10",
                          SERVE_OVERLOAD_WAIT_S="30")
    server.wait_ready()
    path = f"/predict?model={image_model.name}"
    with server.client() as client:
        before = scrape(client)
        short, long = send_while_paused(server, [
            sender(server, path, digits[0], "image/png", {"X-Request-Timeout": str(PAUSE_S * 1000 / 2)}),
            sender(server, path, digits[1], "image/png", {"X-Request-Timeout": "60000"}),
        ])
        assert_json_error(answer(short), 503, "deadline_exceeded")
        answered = answer(long)
        assert answered.status_code == 200, answered.text
        assert_prediction(answered.json(), image_model.image_probabilities(digits[1]), image_model.labels, 5)
        after = scrape(client)
    ran = value(after, "modelserver_batch_size_sum", model=image_model.name) - value(
        before, "modelserver_batch_size_sum", model=image_model.name)
    assert ran == 1, "the request past its deadline was run"


@needs_tcp_info
def test_a_request_that_waited_unread_too_long_is_refused_before_any_work(
    start_server: StartServer, models_dir: Path, image_model: ModelUnderTest, text_model: ModelUnderTest,
    digits: list[bytes],
) -> None:
    """503 `overloaded` with Retry-After and a request id, on `/predict` and `/v2`, counted in `/metrics` with
    the wait; health probes that waited as long are still answered, and so is the next request."""
    server = start_server(models_dir, SERVE_MODELS=f"{image_model.name},{text_model.name}",
                          SERVE_OVERLOAD_WAIT_S=str(PAUSE_S / 2))
    server.wait_ready()
    pixels = image_model.image_tensor(digits[0])
    v2_body = json.dumps({"inputs": [{"name": image_model.config.inputs[0].name, "shape": [1, *pixels.shape],
                                      "datatype": "FP32", "data": pixels.ravel().tolist()}]})
    with server.client() as client:
        before = scrape(client)
        connections = send_while_paused(server, [
            sender(server, f"/predict?model={image_model.name}", digits[0], "image/png"),
            sender(server, "/predict", json.dumps({"text": "a gripping film"}), "application/json"),
            sender(server, f"/v2/models/{image_model.name}/infer", v2_body, "application/json"),
        ])
        for connection in connections:
            refused = answer(connection)
            assert_json_error(refused, 503, "overloaded")
            assert refused.headers["retry-after"] == "1"
            assert refused.headers["x-request-id"]
        probe = send_while_paused(server, [sender(server, "/health/ready")])[0]
        assert answer(probe).status_code == 200
        answered = client.post("/predict", json={"text": "a gripping film"})
        assert answered.status_code == 200, answered.text
        after = scrape(client)

    def change(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert change("modelserver_errors_total", model="", kind="overloaded") == len(connections)
    for model in (image_model.name, text_model.name):
        assert change("modelserver_batch_size_sum", model=model) == (model == text_model.name), "a refusal ran"
    waits = change("modelserver_request_read_delay_seconds_sum")
    assert waits >= (len(connections) + 1) * PAUSE_S * 0.7, f"the waits were not measured: {waits:.2f} s"
