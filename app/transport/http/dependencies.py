"""FastAPI dependencies shared by the routes: the API key checks (the data plane's, with the key the request
carries), the request's deadline and the overload refusal."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Coroutine

from fastapi import Request

from app.dataplane.access import AccessPolicy, Operation
from app.dataplane.plane import DataPlane
from app.errors import Overloaded, UnprocessableInput
from app.models.registry import ModelRegistry


async def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


async def get_dataplane(request: Request) -> DataPlane:
    return request.app.state.dataplane


REQUEST_TIMEOUT_HEADER = "x-request-timeout"


def _received_at(request: Request) -> float:
    """When the request reached the machine (`app.transport.http.arrival`); now, under a server that does not say."""
    received_at: float | None = getattr(request.state, "received_at", None)
    return time.perf_counter() if received_at is None else received_at


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


def _given_key(request: Request) -> str | None:
    """The key sent as `X-API-Key` or as a bearer token; None when there is none (or it is empty)."""
    given = request.headers.get("x-api-key")
    if given is None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = token if scheme.lower() == "bearer" else None
    return given or None


def _check_access(request: Request, operation: Operation) -> None:
    """The data plane's access check (`app.dataplane.access`) with the key the request carries."""
    access: AccessPolicy = request.app.state.dataplane.access
    if access.requires_key(operation):
        access.check(_given_key(request), operation)


async def require_api_key(request: Request) -> None:
    """Model operations: a key, when keys are configured (`SERVE_API_KEY`, `SERVE_API_KEYS`)."""
    _check_access(request, Operation.MODELS)


async def require_admin_key(request: Request) -> None:
    """Repository operations (loading and unloading models) always need a key: with none configured they are
    closed."""
    _check_access(request, Operation.REPOSITORY)


async def health_access(request: Request) -> None:
    """Health routes need a key only when `SERVE_PUBLIC_HEALTH=false`."""
    _check_access(request, Operation.HEALTH)


async def metrics_access(request: Request) -> None:
    """`/metrics` needs a key only when `SERVE_PUBLIC_METRICS=false`."""
    _check_access(request, Operation.METRICS)


# The access dependencies, and the data-plane operation each checks.
ACCESS_OPERATIONS: dict[Callable[[Request], Awaitable[None]], Operation] = {
    require_api_key: Operation.MODELS,
    require_admin_key: Operation.REPOSITORY,
    health_access: Operation.HEALTH,
    metrics_access: Operation.METRICS,
}
