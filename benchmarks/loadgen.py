"""A closed-loop load generator on asyncio (uvloop when installed), for 127.0.0.1 only, and its HTTP/1.1 client.

`concurrency` sessions, each sending its next request as soon as the previous answer is in. The requests are
prebuilt byte strings (one per distinct input) taken round-robin from a shared counter, so concurrent requests
carry different bodies. A client (`Client`) says how a session sends one of them and reads its answer: here
`HttpClient`, raw asyncio streams with HTTP/1.1 keep-alive, one connection per session, the answer read by its
`Content-Length` (or chunked encoding) and nothing else parsed; benchmarks/peer/protocols.py adds gRPC. A cell
runs a warm-up period, then a measured window; only answers that complete inside the window count for
requests/s and latency, and callbacks fire at the window's start and end so that the caller can read counters
(CPU times, /metrics) over exactly the window. After the window, requests in flight are awaited (at most
`drain_timeout_s`) and not counted. Every loop is bounded in time and in requests.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

HOST = "127.0.0.1"


def build_request(method: str, path: str, port: int, body: bytes = b"", content_type: str = "",
                  api_key: str | None = None, headers: dict[str, str] | None = None) -> bytes:
    """The bytes of one HTTP/1.1 keep-alive request, with `X-API-Key` when an `api_key` is given."""
    head = [f"{method} {path} HTTP/1.1", f"host: {HOST}:{port}"]
    if api_key is not None:
        head.append(f"x-api-key: {api_key}")
    if body or method == "POST":
        head += [f"content-type: {content_type}", f"content-length: {len(body)}"]
    head += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, the server will close the connection) of one response."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    close = b"connection: close" in lower
    start = lower.find(b"\r\ncontent-length:")  # a whole header name (not inference-header-content-length)
    if start >= 0:
        end = lower.find(b"\r\n", start + 2)
        return status, await reader.readexactly(int(lower[start + 17:end])), close
    if b"transfer-encoding: chunked" in lower:
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return status, b"".join(chunks), close
            chunks.append(chunk[:-2])
    return status, await reader.read(), True  # no length: the body runs to the end of the connection


async def http_get(port: int, path: str, timeout_s: float = 30, api_key: str | None = None) -> tuple[int, bytes]:
    """One GET on a fresh connection (for /metrics and readiness checks)."""
    async def get() -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            writer.write(build_request("GET", path, port, api_key=api_key))
            status, body, _ = await read_response(reader)
            return status, body
        finally:
            writer.close()

    return await asyncio.wait_for(get(), timeout_s)


@dataclass
class LoadResult:
    """What one cell measured."""

    concurrency: int
    window_s: float
    ok: int  # 2xx answers completed in the window
    latencies_s: list[float]  # of those answers
    errors: int  # non-2xx answers and transport errors over the whole cell (warm-up, window and drain)
    error_detail: dict[str, int] = field(default_factory=dict)
    sent: int = 0  # requests sent over the whole cell
    client_cpu_s: float = 0.0  # this process's CPU time over the window
    client_wait_s: float = 0.0  # time this process's threads waited for a CPU while runnable, over the window
    unfinished: int = 0  # requests still in flight when the drain timed out (also counted in errors)


def process_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def sched_waits(pid: int | str = "self") -> dict[str, int]:
    """Nanoseconds each thread of a process spent runnable but waiting for a CPU (/proc/<pid>/task/*/schedstat):
    time other processes (or its own other threads) took from it."""
    waits = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            waits[f"{pid}/{task.name}"] = int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return waits


def wait_delta_s(before: dict[str, int], after: dict[str, int]) -> float:
    """Seconds waited between two `sched_waits` snapshots, by the threads alive at the second (a thread that
    started in between counts from zero, one that ended in between is lost)."""
    return sum(value - before.get(thread, 0) for thread, value in after.items()) / 1e9


class Session(Protocol):
    """One closed-loop session of a client: one request at a time."""

    async def open(self) -> None:
        """Connect if not connected (an OSError: the connection failed, nothing was sent)."""

    async def exchange(self, index: int) -> tuple[str | None, bytes]:
        """Send request `index` and read its answer: (None, body) on success, else (what went wrong, b"").
        Raises one of its client's `transport_errors` when the connection broke."""

    def close(self) -> None:
        """Drop the connection (the next `open` reconnects)."""


class Client(Protocol):
    """A way to send the prebuilt requests to a server: sessions over one protocol."""

    requests: list[bytes]
    transport_errors: tuple[type[BaseException], ...]

    def session(self) -> Session: ...

    async def aclose(self) -> None: ...


class HttpSession:
    """One HTTP/1.1 keep-alive connection, reopened after the server closes it."""

    def __init__(self, port: int, requests: list[bytes]) -> None:
        self.port, self.requests = port, requests
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)

    async def exchange(self, index: int) -> tuple[str | None, bytes]:
        assert self.reader is not None and self.writer is not None
        self.writer.write(self.requests[index])
        status, body, close = await read_response(self.reader)
        if close:
            self.close()
        return (None, body) if 200 <= status < 300 else (f"HTTP {status}", b"")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class HttpClient:
    """Prebuilt HTTP/1.1 requests (`build_request`), one keep-alive connection per session."""

    transport_errors = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError)

    def __init__(self, port: int, requests: list[bytes]) -> None:
        self.port, self.requests = port, requests

    def session(self) -> HttpSession:
        return HttpSession(self.port, self.requests)

    async def aclose(self) -> None:
        """Nothing to close: each session closes its own connection."""


class LoadGenerator:
    """Runs cells against one server through one client; the input counter carries on from cell to cell."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.next_index = 0

    async def run(self, concurrency: int, warmup_s: float, duration_s: float,
                  on_window_start: Callable[[], Awaitable[None]] | None = None,
                  on_window_end: Callable[[], Awaitable[None]] | None = None,
                  max_requests: int = 5_000_000, drain_timeout_s: float = 60.0,
                  collect: dict[int, bytes] | None = None) -> LoadResult:
        """One cell; with `collect`, the last 2xx body answered for each input index is kept there."""
        clock = time.perf_counter
        began = clock()
        window_start = began + warmup_s
        window_end = window_start + duration_s
        latencies: list[float] = []
        errors: Counter[str] = Counter()
        counts = {"ok": 0, "sent": 0}
        total, transport_errors = len(self.client.requests), self.client.transport_errors

        async def worker() -> None:
            session = self.client.session()
            try:
                while counts["sent"] < max_requests and clock() < window_end:
                    try:
                        await session.open()
                    except OSError as exc:
                        errors[f"connect: {type(exc).__name__}"] += 1
                        await asyncio.sleep(0.05)
                        continue
                    index = self.next_index % total
                    self.next_index += 1
                    counts["sent"] += 1
                    started = clock()
                    try:
                        error, body = await session.exchange(index)
                    except transport_errors as exc:
                        errors[type(exc).__name__] += 1
                        session.close()
                        continue
                    finished = clock()
                    if error is None:
                        if window_start <= finished < window_end:
                            latencies.append(finished - started)
                        if collect is not None:
                            collect[index] = body
                    else:
                        errors[error] += 1
            finally:
                session.close()

        async def window_edges() -> tuple[float, float]:
            await asyncio.sleep(max(0.0, window_start - clock()))
            cpu_start, wait_start = process_cpu_s(), sched_waits()
            if on_window_start is not None:
                await on_window_start()
            await asyncio.sleep(max(0.0, window_end - clock()))
            cpu_end, wait_end = process_cpu_s(), sched_waits()
            if on_window_end is not None:
                await on_window_end()
            return cpu_end - cpu_start, wait_delta_s(wait_start, wait_end)

        edges = asyncio.ensure_future(window_edges())
        workers = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
        await edges
        client_cpu, client_wait = edges.result()
        _, pending = await asyncio.wait(workers, timeout=max(0.0, window_end + drain_timeout_s - clock()))
        for task in pending:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        if pending:
            errors["unfinished after the drain timeout"] += len(pending)
        return LoadResult(concurrency, duration_s, len(latencies), latencies, sum(errors.values()), dict(errors),
                          counts["sent"], client_cpu, client_wait, len(pending))
