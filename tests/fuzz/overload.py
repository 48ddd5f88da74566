"""An open-loop HTTP load generator on raw asyncio streams (cheap enough on the client side to drive the
server well past its sustainable rate from the same 2 cores), and the checks of an overload run."""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Request:
    """One HTTP request to send: method, path, body and content type."""

    path: str
    body: bytes
    content_type: str = "application/json"
    method: str = "POST"

    def encode(self, port: int) -> bytes:
        return (
            f"{self.method} {self.path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: {self.content_type}"
            f"\r\nContent-Length: {len(self.body)}\r\nConnection: close\r\n\r\n"
        ).encode() + self.body


@dataclass
class Outcome:
    """What came back for one request: the status and JSON body of each HTTP response on its connection."""

    index: int
    sent_at: float
    latency: float = 0.0
    responses: int = 0
    status: int | None = None
    body: Any = None
    error: str | None = None


async def send_one(port: int, request: Request, index: int, timeout: float) -> Outcome:
    """Send a request on its own connection (Connection: close) and read every byte the server sends back."""
    outcome = Outcome(index, time.monotonic())
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request.encode(port))
            await writer.drain()
            received = await reader.read(-1)
            writer.close()
    except (OSError, TimeoutError) as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"
        return outcome
    outcome.latency = time.monotonic() - outcome.sent_at
    outcome.responses = received.count(b"HTTP/1.1 ")
    head, _, body = received.partition(b"\r\n\r\n")
    if head.startswith(b"HTTP/1.1 "):
        outcome.status = int(head.split()[1])
        try:
            outcome.body = json.loads(body)
        except ValueError:
            outcome.body = body[:200]
    return outcome


async def open_loop(port: int, requests: list[Request], rate: float, timeout: float = 60.0) -> list[Outcome]:
    """Start request i at i / rate seconds whether or not earlier ones were answered; wait for all."""
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    tasks = []
    for index, request in enumerate(requests):
        delay = start + index / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(loop.create_task(send_one(port, request, index, timeout)))
    return list(await asyncio.gather(*tasks))


async def closed_loop(port: int, requests: list[Request], clients: int, seconds: float) -> float:
    """Requests answered 200 per second with `clients` clients each sending one after another."""
    deadline = time.monotonic() + seconds
    counter = iter(range(10**9))
    answered = 0

    async def client() -> None:
        nonlocal answered
        while time.monotonic() < deadline:
            index = next(counter)
            outcome = await send_one(port, requests[index % len(requests)], index, 30.0)
            answered += outcome.status == 200

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(clients)))
    return answered / (time.monotonic() - started)


async def burst(port: int, requests: list[Request], clients: int) -> list[Outcome]:
    """Send each request once, `clients` at a time (each sending one after another); the outcomes in order."""
    queue = iter(enumerate(requests))
    outcomes: list[Outcome] = []

    async def client() -> None:
        for index, request in queue:
            outcomes.append(await send_one(port, request, index, 30.0))

    await asyncio.gather(*(client() for _ in range(clients)))
    return sorted(outcomes, key=lambda outcome: outcome.index)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process `pid` (all its threads) so far, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime and stime, in ticks


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0
