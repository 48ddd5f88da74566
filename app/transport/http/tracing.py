"""Tracing of the HTTP transport, installed only when tracing is on (app.observability.tracing).

OpenTelemetry's ASGI instrumentation is the outermost middleware: it continues the client's W3C `traceparent`
(or starts a trace), makes the server span, and answers with the server span's `traceparent`. Its per-message
`receive` and `send` spans are left out (the route's `read` and `answer` spans say more), and so are the health
and metrics paths unless `OTEL_PYTHON_ASGI_EXCLUDED_URLS` (or `OTEL_PYTHON_EXCLUDED_URLS`) says otherwise.
`ServerSpanRoute`, just inside it, names the server span after the route template once the route is known
(`POST /v2/models/{name}/infer`), as the semantic conventions ask, rather than after the raw path.
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.semconv.attributes.http_attributes import HTTP_ROUTE
from opentelemetry.util.http import get_excluded_urls, parse_excluded_urls
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Probes and scrapes, every few seconds each: not traced unless the variables below name other paths.
DEFAULT_EXCLUDED_URLS = "/health,/metrics"
EXCLUDED_URLS_VARIABLES = ("OTEL_PYTHON_ASGI_EXCLUDED_URLS", "OTEL_PYTHON_EXCLUDED_URLS")


class ServerSpanRoute:
    """Renames a recording server span `METHOD route-template` and sets `http.route`, as the answer starts."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server_span = trace.get_current_span()
        if scope["type"] != "http" or not server_span.is_recording():
            await self.app(scope, receive, send)
            return

        async def send_naming_route(message: Message) -> None:
            if message["type"] == "http.response.start":
                route = getattr(scope.get("route"), "path", None)
                if route is not None:
                    server_span.update_name(f"{scope['method']} {route}")
                    server_span.set_attribute(HTTP_ROUTE, route)
            await send(message)

        await self.app(scope, receive, send_naming_route)


def install_tracing(app: FastAPI) -> None:
    """Add the tracing middleware outside every other (call after the others are added)."""
    if any(os.environ.get(name) for name in EXCLUDED_URLS_VARIABLES):
        excluded = get_excluded_urls("ASGI")
    else:
        excluded = parse_excluded_urls(DEFAULT_EXCLUDED_URLS)
    app.add_middleware(ServerSpanRoute)
    app.add_middleware(OpenTelemetryMiddleware, excluded_urls=excluded, exclude_spans=["receive", "send"])
