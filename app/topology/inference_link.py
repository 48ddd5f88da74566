"""The link between front-end workers and the inference process (`SERVE_SHARED_INFERENCE`).

A front-end worker sends a collated batch (input tensors) for a model version over a Unix socket in the
workers' shared directory; the inference process queues its rows in that model's batcher, where they run
together with the batches of every other worker, and sends back the output tensors of those rows. Messages are
pickled (protocol 5: numpy arrays go as raw bytes) and framed by their length; both ends are this service's
own processes, and the socket sits in a directory only this user can open.

A refusal in the inference process (a full queue, a deadline, a shutdown) comes back as the error it raised
(`app.errors` errors pickle with their attributes); a model failure as a `RemoteInferenceFailed`, so that the
front end isolates the request that broke its batch as it would for a session of its own; a link that is down
raises `InferenceUnreachable` (503).
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from app.errors import InferenceFailed, ServiceError, Unavailable

logger = logging.getLogger(__name__)

SOCKET_NAME = "inference.sock"
_LENGTH = struct.Struct("!Q")

# What the inference process is asked: `("describe", name, version)` answers the model's state and batch caps;
# `("run", name, version, output_names, feeds, trace)` the outputs of the batch's rows, where `trace` is the
# traced batch's W3C context (app.observability.tracing.link_carrier), or None.
Message = tuple[Any, ...]


class RemoteInferenceFailed(RuntimeError):
    """The model failed on the batch in the inference process (its log has the cause)."""


class InferenceUnreachable(Unavailable):
    """The inference process does not answer (it is starting, or restarting after it died)."""

    code = "inference_unreachable"


def link_path(directory: Path) -> Path:
    """Where the inference process listens, in the workers' shared directory."""
    return directory / SOCKET_NAME


def _frame(message: Any) -> bytes:
    payload = pickle.dumps(message, protocol=5)
    return _LENGTH.pack(len(payload)) + payload


def _error_reply(exc: BaseException) -> Message:
    if isinstance(exc, InferenceFailed):
        logger.error("%s", exc)  # the cause stays here; the front end answers with the message and an error id
        return ("failed", exc.message)
    if isinstance(exc, ServiceError):
        return ("refused", exc)
    logger.error("the inference process failed on a message from a front end", exc_info=exc)
    return ("failed", f"{type(exc).__name__}: {exc}")


# The front-end side: blocking, used from one model's load and batch threads --------------------------------


class InferenceClient:
    """A connection to the inference process, opened on first use and again after it broke."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()

    def call(self, message: Message) -> Any:
        """Send `message` and return the answer, or raise what the inference process answered with."""
        with self._lock:
            try:
                self._send(_frame(message))
                (size,) = _LENGTH.unpack(self._receive(_LENGTH.size))
                reply = pickle.loads(self._receive(size))
            except OSError as exc:
                self.close()
                raise InferenceUnreachable(f"the inference process is not answering ({exc.strerror or exc}); "
                                           "retry shortly") from None
        kind, *rest = reply
        if kind == "ok":
            return rest[0]
        if kind == "refused":
            raise rest[0]
        raise RemoteInferenceFailed(rest[0])

    def _send(self, frame: bytes) -> None:
        """Send on the open connection, or on a new one if that one's process is gone: a new inference process
        took its place, and nothing reached the old one."""
        if self._socket is not None:
            try:
                self._socket.sendall(frame)
                return
            except (BrokenPipeError, ConnectionResetError):
                self.close()
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._socket.connect(str(self.path))
        self._socket.sendall(frame)

    def _receive(self, size: int) -> bytes:
        """Read exactly `size` bytes."""
        assert self._socket is not None
        chunks, left = [], size
        while left:
            chunk = self._socket.recv(min(left, 1 << 20))
            if not chunk:
                raise ConnectionResetError(0, "the inference process closed the link")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def wait_until_ready(client: InferenceClient, name: str, version: int, poll_s: float = 0.1) -> dict[str, Any]:
    """Poll the inference process until `name` version `version` is ready or failed there, and return its
    description (`state`, and `error` when it failed)."""
    while True:
        try:
            described = client.call(("describe", name, version))
        except InferenceUnreachable:  # not started yet, or starting again
            described = None
        if described is not None and described["state"] in ("ready", "failed"):
            return described
        time.sleep(poll_s)


# The inference process's side -----------------------------------------------------------------------------

Handler = Callable[[Message], Awaitable[Any]]


async def serve(path: Path, handle: Handler) -> asyncio.base_events.Server:
    """Listen on `path`; each message a front end sends is answered with what `handle` returns or raises."""

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (size,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
                message = pickle.loads(await reader.readexactly(size))
                try:
                    reply: Message = ("ok", await handle(message))
                except Exception as exc:  # noqa: BLE001 - every failure goes back to the front end that asked
                    reply = _error_reply(exc)
                writer.write(_frame(reply))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the front end closed its end (it stopped or restarts)
        finally:
            writer.close()

    path.unlink(missing_ok=True)  # a socket file left by an inference process that died
    return await asyncio.start_unix_server(connection, path=str(path))

