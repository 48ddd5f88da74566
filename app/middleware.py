"""Pure ASGI middleware: request metrics and the request body size limit."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import PayloadTooLarge
from app.metrics import Metrics


class RequestMetrics:
    """Counts requests and errors and times them, labelled by route template (never the raw path)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.requests_in_flight += 1
        try:
            await self.app(scope, receive, send_with_status)
        finally:
            self.metrics.requests_in_flight -= 1
            route = getattr(scope.get("route"), "path", "unmatched")
            state = scope.get("state", {})
            model = state.get("model", "")
            self.metrics.requests.labels(route, model, str(status)).inc()
            self.metrics.request_duration.labels(route, model).observe(time.perf_counter() - started)
            if status >= 400:
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
