"""A request's time budget, counted from its arrival (app.transport.http.arrival): the overload refusal, the
deadline its batch must meet, and whether its client is still there to be answered.

The model routes call these in this order: `refuse_if_overloaded` before any work, then hand the model
`request_deadline` and `client_gone`, which the batcher checks as the request's batch forms.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine

from fastapi import Request

from app.errors import Overloaded, UnprocessableInput
from app.transport.http.arrival import RECEIVED_AT

REQUEST_TIMEOUT_HEADER = "x-request-timeout"


def _received_at(request: Request) -> float:
    """When the request reached the machine, as its server stamped it (a `time.perf_counter()` value)."""
    received_at: float = request.scope["state"][RECEIVED_AT]
    return received_at


def refuse_if_overloaded(request: Request) -> None:
    """Refuse a request that waited unread (in the kernel's accept queue or socket buffer) longer than
    `SERVE_OVERLOAD_WAIT_S`: the process is behind, and a refusal made before any work lets it catch up."""
    waited = time.perf_counter() - _received_at(request)
    limit: float = request.app.state.settings.overload_wait_s
    if waited > limit:
        raise Overloaded(f"the server is overloaded: this request waited {waited:.2f} s before it could be read "
                         f"(SERVE_OVERLOAD_WAIT_S is {limit:g} s); retry later")


def request_deadline(request: Request) -> float:
    """The request's deadline as a `time.perf_counter()` value, counted from its arrival: `X-Request-Timeout:
    <milliseconds>` when the client sets one, capped by `SERVE_REQUEST_TIMEOUT_S` (the default when it does not).
    """
    cap: float = request.app.state.settings.request_timeout_s
    given = request.headers.get(REQUEST_TIMEOUT_HEADER)
    if given is None:
        return _received_at(request) + cap
    try:
        milliseconds = float(given)
    except ValueError:
        milliseconds = float("nan")
    if not 0 < milliseconds < float("inf"):
        raise UnprocessableInput("X-Request-Timeout must be a positive number of milliseconds")
    return _received_at(request) + min(milliseconds / 1000, cap)


def client_gone(request: Request) -> Callable[[], bool]:
    """A check of whether the client has closed its connection, cheap enough to make for every queued request;
    use it once the request body has been read.

    It takes one step of the ASGI `receive()`: for a closed connection that step returns `http.disconnect` at
    once; otherwise `receive()` starts waiting for the disconnect, and the step is abandoned. It runs in the
    batcher, so whatever cannot tell (a server whose `receive()` is no coroutine, or one that fails) means
    "still there": the request runs.
    """
    receive = request.receive

    def gone() -> bool:
        step = receive()
        if not isinstance(step, Coroutine):
            return False
        try:
            step.send(None)
        except StopIteration as done:
            return bool(done.value["type"] == "http.disconnect")
        except Exception:  # noqa: BLE001 - see above
            return False
        step.close()
        return False

    return gone
