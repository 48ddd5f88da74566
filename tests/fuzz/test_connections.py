"""Abuse at the connection level through the real server: header floods, slow clients sending a byte at a
time, and many connections held open. None may hold up other clients or leave the server unhealthy."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

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


# The server's defaults (app/transport/http/limits.py): bytes of the request line and header fields, and fields.
MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 100
OWN_FIELDS = 4  # those of _request_head


def _filler(count: int, value_bytes: int = 1) -> bytes:
    return b"".join(b"X-Filler-%03d: %s\r\n" % (i, b"v" * value_bytes) for i in range(count))


def _counted(head: bytes) -> int:
    """What the server counts of `head` before refusing it: the request target, and `name:value\\r\\n` of each
    field (the least that a field takes); never more than the head's size."""
    request_line, *fields = head.decode("latin-1").split("\r\n")
    target = request_line.split(" ")[1]
    return len(target) + sum(len(name) + len(value.strip()) + 3 for name, value in (f.split(":", 1) for f in fields if f))


def _head_with_long_header(port: int, size: int, measure: Callable[[bytes], int]) -> bytes:
    """A request head with one long header, making `measure(head) == size`."""
    short = _request_head(port, len(BODY), extra=b"X-Long: v\r\n")
    head = _request_head(port, len(BODY), extra=b"X-Long: " + b"v" * (size - measure(short) + 1) + b"\r\n")
    assert measure(head) == size
    return head


@pytest.mark.parametrize("case", ["as-many-fields-as-allowed", "head-as-long-as-allowed"])
def test_heads_within_the_limits_are_answered(case: str, fuzz_server: ServerProcess) -> None:
    port = fuzz_server.port
    head = (
        _request_head(port, len(BODY), extra=_filler(MAX_HEADERS - OWN_FIELDS))
        if case == "as-many-fields-as-allowed"
        else _head_with_long_header(port, MAX_HEAD_BYTES, len)
    )
    response = raw_http(port, head, [BODY])
    assert response.status_code == 200, response.text


FLOODS = ["one-field-too-many", "one-byte-too-many", "10k-headers", "one-1MB-header", "one-8MB-header", "1MB-url"]


@pytest.mark.parametrize("flood", FLOODS)
def test_header_floods_are_refused(flood: str, fuzz_server: ServerProcess) -> None:
    """Too large a request head is answered 431 before the app sees it (while the client is still sending it),
    the connection closes, and the server serves others."""
    port = fuzz_server.port
    if flood == "one-byte-too-many":
        head = _head_with_long_header(port, MAX_HEAD_BYTES + 1, _counted)
    elif flood == "1MB-url":
        head = b"GET /health/live?" + b"a" * (1 << 20) + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    else:
        extra = {
            "one-field-too-many": _filler(MAX_HEADERS - OWN_FIELDS + 1),
            "10k-headers": _filler(10_000, 40),
            "one-1MB-header": b"X-Flood: " + b"v" * (1 << 20) + b"\r\n",
            "one-8MB-header": b"X-Flood: " + b"v" * (8 << 20) + b"\r\n",
        }[flood]
        head = _request_head(port, len(BODY), extra=extra)
    response = raw_http(port, head, [BODY])
    assert response.status_code == 431, (response.status_code, response.text)
    assert response.headers["connection"] == "close"
    assert response.json()["code"] == "request_header_fields_too_large"
    assert_healthy(fuzz_server)


def _chunked(port: int, trailers: bytes, chunk_size: int = len(BODY)) -> tuple[bytes, list[bytes]]:
    """A chunked /predict request of BODY in chunks of `chunk_size` bytes, then `trailers`: head and parts."""
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part)
                      for part in (BODY[i:i + chunk_size] for i in range(0, len(BODY), chunk_size)))
    return head, [chunks + b"0\r\n", trailers, b"\r\n"]


@pytest.mark.parametrize("case", ["as-many-trailers-as-allowed", "one-byte-chunks"])
def test_chunked_bodies_within_the_limits_are_answered(
    case: str, fuzz_server: ServerProcess, text_model: ModelUnderTest
) -> None:
    if case == "as-many-trailers-as-allowed":
        head, parts = _chunked(fuzz_server.port, _filler(MAX_HEADERS, 500))
    else:
        head, parts = _chunked(fuzz_server.port, b"X-Checksum: 1\r\n", chunk_size=1)
    response = raw_http(fuzz_server.port, head, parts)
    assert response.status_code == 200, response.text
    assert_prediction(response.json(), text_model.text_probabilities(BODY.decode().split('"')[3]),
                      text_model.labels, 5)


@pytest.mark.parametrize("flood", ["one-trailer-too-many", "10k-trailers", "one-8MB-trailer"])
def test_trailer_floods_are_refused(flood: str, fuzz_server: ServerProcess) -> None:
    """Trailer fields count against the head's limits: too many or too large get 431 while they are still
    coming, the connection closes, the request ends as if its client had left (no error logged), and the
    server serves others."""
    trailers = {
        "one-trailer-too-many": _filler(MAX_HEADERS + 1),
        "10k-trailers": _filler(10_000, 40),
        "one-8MB-trailer": b"X-Flood: " + b"v" * (8 << 20) + b"\r\n",
    }[flood]
    head, parts = _chunked(fuzz_server.port, trailers)
    response = raw_http(fuzz_server.port, head, parts)
    assert response.status_code == 431, (response.status_code, response.text)
    assert response.headers["connection"] == "close"
    assert response.json()["code"] == "request_header_fields_too_large"
    assert_healthy(fuzz_server)
    assert "unhandled error" not in fuzz_server.log(), fuzz_server.log()[-3000:]


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
