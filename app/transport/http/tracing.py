"""Tracing of the HTTP transport, installed only when tracing is on (app.observability.tracing).

`ServerSpans` is the outermost middleware. It continues the caller's trace from the propagated headers (W3C
`traceparent` and `tracestate` by default, `OTEL_PROPAGATORS` otherwise) or starts one, makes the request's
SERVER span, current while the request runs, and answers with that span's `traceparent`. A sampled span gets
the semantic conventions' HTTP attributes and is named after the route template (`POST /predict`) once the
route is known; an unsampled one costs a sampling decision and the header. The health and metrics paths are not
traced unless `OTEL_PYTHON_ASGI_EXCLUDED_URLS` (or `OTEL_PYTHON_EXCLUDED_URLS`) names other paths (regular
expressions, comma-separated, searched in the path), as for OpenTelemetry's ASGI instrumentation.

Hand-written rather than that instrumentation or FastAPI's own telemetry (which the application turns off),
which did the same at several times the cost per request, sampled or not (docs/benchmarks.md, "Tracing").
"""

from __future__ import annotations

import os
import re

from opentelemetry import context, propagate, trace
from opentelemetry.semconv.attributes import (
    client_attributes,
    http_attributes,
    server_attributes,
    url_attributes,
    user_agent_attributes,
)
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.observability import tracing

# Probes and scrapes, every few seconds each: not traced unless the variables below name other paths.
DEFAULT_EXCLUDED_URLS = "/health,/metrics"
EXCLUDED_URLS_VARIABLES = ("OTEL_PYTHON_ASGI_EXCLUDED_URLS", "OTEL_PYTHON_EXCLUDED_URLS")
TRACEPARENT = b"traceparent"


def excluded_paths() -> re.Pattern[str]:
    """The paths not traced: the first variable's list that is set, else DEFAULT_EXCLUDED_URLS."""
    listed = next((os.environ[name] for name in EXCLUDED_URLS_VARIABLES if os.environ.get(name)),
                  DEFAULT_EXCLUDED_URLS)
    return re.compile("|".join(f"(?:{item.strip()})" for item in listed.split(",") if item.strip()))


class ServerSpans:
    """Pure ASGI middleware: a SERVER span per HTTP request (module docstring)."""

    def __init__(self, app: ASGIApp, excluded: re.Pattern[str]) -> None:
        self.app = app
        self.excluded = excluded
        self.tracer = tracing.tracer()
        # The header names the propagators read, as ASGI writes them (lower-case bytes).
        self.propagated = {name.lower().encode("latin-1") for name in propagate.get_global_textmap().fields}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.excluded.search(scope["path"]):
            await self.app(scope, receive, send)
            return
        carrier = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
                   if name in self.propagated}
        span = self.tracer.start_span(scope["method"], context=propagate.extract(carrier), kind=SpanKind.SERVER)
        recording = span.is_recording()
        if recording:
            _describe_request(span, scope)
        header = (TRACEPARENT, tracing.traceparent(span.get_span_context()).encode("latin-1"))

        async def send_traced(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
                if recording:
                    _describe_response(span, scope, message["status"])
            await send(message)

        token = context.attach(trace.set_span_in_context(span))
        try:
            await self.app(scope, receive, send_traced)
        except Exception as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            context.detach(token)
            span.end()


def _describe_request(span: trace.Span, scope: Scope) -> None:
    attributes = {
        http_attributes.HTTP_REQUEST_METHOD: scope["method"],
        url_attributes.URL_PATH: scope["path"],
        url_attributes.URL_SCHEME: scope.get("scheme", "http"),
    }
    if scope.get("server"):
        attributes[server_attributes.SERVER_ADDRESS], attributes[server_attributes.SERVER_PORT] = scope["server"]
    if scope.get("client"):
        attributes[client_attributes.CLIENT_ADDRESS] = scope["client"][0]
    agent = next((value for name, value in scope["headers"] if name == b"user-agent"), None)
    if agent is not None:
        attributes[user_agent_attributes.USER_AGENT_ORIGINAL] = agent.decode("latin-1")
    span.set_attributes(attributes)


def _describe_response(span: trace.Span, scope: Scope, status: int) -> None:
    """The status, and the route's template as the span's name and `http.route` once routing has matched."""
    span.set_attribute(http_attributes.HTTP_RESPONSE_STATUS_CODE, status)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))
    route = getattr(scope.get("route"), "path", None)
    if route is not None:
        span.update_name(f"{scope['method']} {route}")
        span.set_attribute(http_attributes.HTTP_ROUTE, route)
