"""Abuse at the connection level through the real server: header floods, slow clients sending a byte at a
time, and many connections held open. None may hold up other clients or leave the server unhealthy."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest

from tests.serving.support import ModelUnderTest, ServerProcess, assert_prediction, raw_http

from .conftest import assert_healthy

BODY = b'{"text": "a gripping, beautifully acted film that stays with you long after the credits roll"}'


def _request_head(port: int, length: int, path: str = "/predict", extra: bytes = b"") -> bytes:
    return (
        (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\nConnection: close\r\n"
        ).encode()
        + extra
        + b"\r\n"
    )


def test_many_small_headers_are_answered(fuzz_server: ServerProcess) -> None:
    headers = b"".join(b"X-Filler-%d: %d\r\n" % (i, i) for i in range(100))
    response = raw_http(fuzz_server.port, _request_head(fuzz_server.port, len(BODY), extra=headers), [BODY])
    assert response.status_code == 200, response.text


@pytest.mark.xfail(
    strict=True,
    reason="uvicorn's httptools parser sets no limit on header size: 10,000 "
    "headers or one 64 MB header are buffered whole and answered 200 (memory grows with each); "
    "app/__main__.py could run uvicorn's h11 parser with h11_max_incomplete_event_size, or "
    "cap headers before the app",
)
@pytest.mark.parametrize("flood", ["10k-headers", "one-1MB-header"])
def test_header_floods_are_refused(flood: str, fuzz_server: ServerProcess) -> None:
    extra = (
        b"".join(b"X-Flood-%d: %s\r\n" % (i, b"v" * 40) for i in range(10_000))
        if flood == "10k-headers"
        else b"X-Flood: " + b"v" * (1 << 20) + b"\r\n"
    )
    response = raw_http(fuzz_server.port, _request_head(fuzz_server.port, len(BODY), extra=extra), [BODY])
    assert response.status_code in (400, 413, 431), response.status_code


@pytest.mark.parametrize("flood", ["10k-headers", "one-8MB-header", "1MB-url"])
def test_server_survives_header_floods(flood: str, fuzz_server: ServerProcess) -> None:
    """Whatever the answer to a flood (uvicorn's 400, or a 200), the connection ends and the server serves."""
    if flood == "1MB-url":
        head = b"GET /health/live?" + b"a" * (1 << 20) + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        body = b""
    else:
        extra = (
            b"".join(b"X-Flood-%d: %s\r\n" % (i, b"v" * 40) for i in range(10_000))
            if flood == "10k-headers"
            else b"X-Flood: " + b"v" * (8 << 20) + b"\r\n"
        )
        head, body = _request_head(fuzz_server.port, len(BODY), extra=extra), BODY
    response = raw_http(fuzz_server.port, head, [body])
    assert response.status_code in (200, 400, 413, 431), response.status_code
    assert_healthy(fuzz_server)


def _drip(port: int, head: bytes, body: bytes, pause_s: float, result: dict[str, object]) -> None:
    """Send head and body one byte at a time, then read the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as connection:
        for byte in head + body:
            connection.sendall(bytes([byte]))
            time.sleep(pause_s)
        result["sent_at"] = time.monotonic()
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    result["answer"] = received


@pytest.mark.parametrize("clients", [1, 20])
def test_slow_clients_do_not_hold_up_others(
    clients: int, fuzz_server: ServerProcess, text_model: ModelUnderTest
) -> None:
    """Clients sending headers and body a byte at a time (about 3 s each) while others are served at once."""
    head = _request_head(fuzz_server.port, len(BODY))
    results: list[dict[str, object]] = [{} for _ in range(clients)]
    threads = [
        threading.Thread(target=_drip, args=(fuzz_server.port, head, BODY, 3.0 / len(head + BODY), result))
        for result in results
    ]
    for thread in threads:
        thread.start()
    served, slowest = 0, 0.0
    with fuzz_server.client(timeout=10.0) as client:
        while any(thread.is_alive() and "sent_at" not in result for thread, result in zip(threads, results)):
            started = time.monotonic()
            response = client.post("/predict", json={"text": "fine"})
            slowest = max(slowest, time.monotonic() - started)
            assert response.status_code == 200, response.text
            served += 1
    for thread in threads:
        thread.join(60)
    assert served >= 20, (
        f"only {served} requests were served while the slow clients sent (slowest {slowest:.2f} s)"
    )
    expected = text_model.text_probabilities(BODY.decode().split('"')[3])
    for result in results:
        answer = result.get("answer", b"")
        assert isinstance(answer, bytes) and answer.startswith(b"HTTP/1.1 200"), answer[:200]
        body = answer.partition(b"\r\n\r\n")[2]
        assert_prediction(httpx.Response(200, content=body).json(), expected, text_model.labels, 2)


def test_many_open_connections(fuzz_server: ServerProcess) -> None:
    """800 connections held open (idle, half a request line, or headers without their body) do not stop the
    server answering others; closing them leaves it healthy."""
    connections = []
    try:
        for index in range(800):
            connection = socket.create_connection(("127.0.0.1", fuzz_server.port), timeout=10)
            if index % 3 == 1:
                connection.sendall(b"POST /predict HT")
            elif index % 3 == 2:
                connection.sendall(_request_head(fuzz_server.port, len(BODY)))
            connections.append(connection)
        with fuzz_server.client(timeout=10.0) as client:
            for _ in range(5):
                started = time.monotonic()
                assert client.get("/health/ready").status_code == 200
                assert client.post("/predict", json={"text": "fine"}).status_code == 200
                assert time.monotonic() - started < 5.0
    finally:
        for connection in connections:
            connection.close()
    assert_healthy(fuzz_server)
