"""Pure ASGI middleware: request ids (and the last-resort error answer), request metrics and the request body
size limit."""

from __future__ import annotations

import time
from collections.abc import Iterable

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import PayloadTooLarge, RateLimited, ServiceError
from app.intake_load import IntakeLoad
from app.observability.logs import REQUEST_ID, request_id_for
from app.observability.metrics import Metrics
from app.transport.http.arrival import RECEIVED_AT
from app.transport.http.errors import unexpected_error_response

REQUEST_ID_HEADER = b"x-request-id"


def request_id_of(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The id of a request with these (lower-case) headers (`app.observability.logs.request_id_for`)."""
    return request_id_for(next((value for name, value in headers if name == REQUEST_ID_HEADER), None))


class RequestId:
    """Gives every HTTP request an id: the client's `X-Request-ID` when it is usable, else 32 random hex
    digits. The id is answered in `X-Request-ID` and tags every log record about the request (`app.observability.logs`).

    As the outermost middleware it also answers an exception that nothing handled (see
    `unexpected_error_response`), which Starlette would otherwise pass on to the server, closing the connection.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope["headers"])
        # Not reset afterwards: each request runs in its own task, with its own context.
        REQUEST_ID.set(request_id.decode())
        header = (REQUEST_ID_HEADER, request_id)
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if started:  # too late to answer: the server logs it and closes the connection
                raise
            await unexpected_error_response(scope["method"], scope["path"], exc)(scope, receive, send_with_id)


class RequestMetrics:
    """Counts requests and errors and times them, labelled by route template (never the raw path), counts the
    model requests by API key id (`request.state.api_key`, set by the key check), and notes
    how long each request waited unread (`app.transport.http.arrival`). It also keeps the intake's load
    (`app.intake_load`: requests in flight, the latest read delay), which the batching reads; the metrics only
    observe it."""

    def __init__(self, app: ASGIApp, metrics: Metrics, load: IntakeLoad) -> None:
        self.app = app
        self.metrics = metrics
        self.load = load  # the intake's control state (app.intake_load), which this middleware keeps
        # With several workers, each writes its in-flight count for /metrics to add up (Metrics.follow_in_flight).
        self._write_in_flight = metrics.in_flight.set if metrics.shared else None
        # The labelled series of each (route, model, status), looked up once: a lookup by label costs as much
        # as the observation. Bounded: route templates, served models and status codes.
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._key_series: dict[tuple[str, str], Counter] = {}  # bounded: key ids and served models

    def _key_requests(self, key: str, model: str) -> Counter:
        series = self._key_series.get((key, model))
        if series is None:
            series = self._key_series[(key, model)] = self.metrics.key_requests.labels(key, model)
        return series

    def _request_series(self, route: str, model: str, status: int) -> tuple[Counter, Histogram]:
        series = self._series.get((route, model, status))
        if series is None:
            series = (self.metrics.requests.labels("http", route, model, str(status)),
                      self.metrics.request_duration.labels("http", route, model))
            self._series[(route, model, status)] = series
        return series

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        load = self.load
        load.read_delay_s = started - scope["state"][RECEIVED_AT]
        self.metrics.read_delay.observe(load.read_delay_s)

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        load.in_flight += 1
        if self._write_in_flight is not None:
            self._write_in_flight(load.in_flight)
        unhandled = False
        try:
            await self.app(scope, receive, send_with_status)
        except Exception:
            unhandled = True  # answered with a 500 by RequestId, outside this middleware
            raise
        finally:
            load.in_flight -= 1
            if self._write_in_flight is not None:
                self._write_in_flight(load.in_flight)
            route = getattr(scope.get("route"), "path", "unmatched")
            state = scope.get("state", {})
            model = state.get("model", "")
            requests, durations = self._request_series(route, model, status)
            requests.inc()
            durations.observe(time.perf_counter() - started)
            if model:  # a model request (/predict, v2 infer): counted by key id too
                key = state.get("api_key")
                key_id = key.id if key is not None else ""
                self._key_requests(key_id, model).inc()
                if state.get("error_code") == RateLimited.code:
                    self.metrics.key_refusals.labels(key_id, model).inc()
            if unhandled:
                self.metrics.errors.labels(model, ServiceError.code).inc()
            elif status >= 400:
                self.metrics.errors.labels(model, state.get("error_code", "http_error")).inc()


class BodySizeLimit:
    """Refuses request bodies over `max_bytes` with 413, whether or not they declare a Content-Length."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.message = f"the request body is over the {max_bytes}-byte limit (SERVE_MAX_BODY_BYTES)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next(
            (int(value) for name, value in scope["headers"] if name == b"content-length" and value.isdigit()), 0
        )
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            if declared > self.max_bytes:  # refused before reading, from inside the route, so metrics name it
                raise PayloadTooLarge(self.message)
            incoming = await receive()
            if incoming["type"] == "http.request":
                received += len(incoming.get("body", b""))
                if received > self.max_bytes:
                    raise PayloadTooLarge(self.message)
            return incoming

        await self.app(scope, limited_receive, send)
