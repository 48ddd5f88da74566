"""What every RPC of the gRPC transport does around its handler, as the HTTP middleware does for a request:
its request id (the client's `x-request-id` metadata when usable, answered in the trailing metadata, with the
RPC span's `traceparent` when tracing is on, and set on its log records), the intake's in-flight count, the key
check, the deadline, the metrics and the answer to an error (`app.transport.grpc.errors`).

A request's deadline is the client's gRPC deadline, capped by `SERVE_REQUEST_TIMEOUT_S` (the deadline when the
client sets none), counted from when the RPC reached the servicer: the batcher never runs a request past it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from prometheus_client import Counter, Histogram

from app.dataplane.access import Operation, given_key
from app.dataplane.keys import Key
from app.dataplane.plane import DataPlane
from app.errors import InferenceFailed, RateLimited, ServiceError
from app.intake_load import IntakeLoad
from app.observability import tracing
from app.observability.logs import REQUEST_ID, new_error_id, request_id_for, with_error_id
from app.observability.metrics import Metrics
from app.transport.grpc.errors import ERROR_CODE_KEY, status_code_for, trailers_for

logger = logging.getLogger(__name__)

REQUEST_ID_KEY = "x-request-id"
TRACEPARENT_KEY = "traceparent"
PROTOCOL = "grpc"

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")


def _traceparent() -> tuple[tuple[str, str], ...]:
    """The RPC's SERVER span as trailing metadata, when tracing is on (as HTTP answers with its header)."""
    answer = tracing.current_traceparent()
    return () if answer is None else ((TRACEPARENT_KEY, answer),)


class Call:
    """One RPC as its handler sees it: the client's metadata, the data plane's access check, its deadline, and
    the model it names (for the metrics and logs)."""

    __slots__ = ("_dataplane", "api_key", "context", "metadata", "model", "received_at")

    def __init__(self, context: grpc.aio.ServicerContext, dataplane: DataPlane, received_at: float) -> None:
        self.context = context
        # Keys arrive lower-case; a repeated key keeps its first value. `-bin` keys carry bytes, unused here.
        self.metadata: dict[str, Any] = {}
        for key, value in context.invocation_metadata() or ():
            self.metadata.setdefault(key, value)
        self.received_at = received_at
        self.model = ""
        self.api_key: Key | None = None
        self._dataplane = dataplane

    def check(self, operation: Operation, model: str | None = None) -> None:
        """The data plane's access check with the key the metadata carry (`x-api-key` or `authorization:
        Bearer`); the key accepted is kept for a model the handler chooses itself."""
        access = self._dataplane.access
        if access.requires_key(operation):
            self.api_key = access.check(given_key(self.metadata.get("x-api-key"), self.metadata.get("authorization")),
                                        operation, model)

    def deadline(self) -> float:
        """The `time.perf_counter()` value by which the request must be answered."""
        cap = self._dataplane.settings.request_timeout_s
        remaining = self.context.time_remaining()
        return self.received_at + (cap if remaining is None else min(remaining, cap))

    def gone(self) -> bool:
        """Whether the client cancelled the RPC (or its deadline passed): then its batch leaves it out."""
        return bool(self.context.cancelled())


class Calls:
    """Runs each RPC's handler with its request id, in-flight count, metrics and error answer."""

    def __init__(self, dataplane: DataPlane, metrics: Metrics, load: IntakeLoad) -> None:
        self.dataplane = dataplane
        self.metrics = metrics
        self.load = load
        self._write_in_flight = metrics.in_flight.set if metrics.shared else None
        # The labelled series of each (method, model, status), looked up once (as app.transport.http.middleware).
        self._series: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}

    def _request_series(self, method: str, model: str, status: str) -> tuple[Counter, Histogram]:
        series = self._series.get((method, model, status))
        if series is None:
            series = (self.metrics.requests.labels(PROTOCOL, method, model, status),
                      self.metrics.request_duration.labels(PROTOCOL, method, model))
            self._series[(method, model, status)] = series
        return series

    def _count_in_flight(self, change: int) -> None:
        self.load.in_flight += change
        if self._write_in_flight is not None:
            self._write_in_flight(self.load.in_flight)

    async def run(self, method: str, handler: Callable[[RequestT, Call], Awaitable[ResponseT]], request: RequestT,
                  context: grpc.aio.ServicerContext) -> ResponseT:
        """Answer `request` to RPC `method` (its full name, e.g. /inference.GRPCInferenceService/ModelInfer).

        The metrics are recorded before the answer is sent (an abort sends it at once), so a client that reads
        /metrics after its answer finds its request counted."""
        call = Call(context, self.dataplane, time.perf_counter())
        given = call.metadata.get(REQUEST_ID_KEY)
        request_id = request_id_for(given.encode() if isinstance(given, str) and given.isascii() else None).decode()
        REQUEST_ID.set(request_id)  # each RPC runs in its own task, with its own context
        self._count_in_flight(1)
        try:
            response = await handler(request, call)
        except ServiceError as exc:
            status = status_code_for(exc)
            self._done(method, call, status, exc.code)
            await self._abort(context, method, call, status, exc, request_id)
            raise  # not reached: abort raises
        except asyncio.CancelledError:  # the client cancelled, or its deadline passed
            self._done(method, call, grpc.StatusCode.CANCELLED)
            raise
        except Exception as exc:
            error_id = new_error_id()
            logger.error("unhandled error on %s, error id %s", method, error_id, exc_info=exc,
                         extra={"error_id": error_id})
            self.metrics.errors.labels(call.model, ServiceError.code).inc()
            self._done(method, call, grpc.StatusCode.INTERNAL, ServiceError.code)
            await context.abort(grpc.StatusCode.INTERNAL, with_error_id("internal server error", error_id),
                                ((REQUEST_ID_KEY, request_id), (ERROR_CODE_KEY, ServiceError.code), *_traceparent()))
            raise  # not reached
        self._done(method, call, grpc.StatusCode.OK)
        context.set_trailing_metadata(((REQUEST_ID_KEY, request_id), *_traceparent()))
        return response

    def _done(self, method: str, call: Call, status: grpc.StatusCode, error_code: str | None = None) -> None:
        self._count_in_flight(-1)
        requests, durations = self._request_series(method, call.model, status.name)
        requests.inc()
        durations.observe(time.perf_counter() - call.received_at)
        if call.model:  # a model request (ModelInfer): counted by key id too, as over HTTP
            key_id = call.api_key.id if call.api_key is not None else ""
            self.metrics.key_requests.labels(key_id, call.model).inc()
            if error_code == RateLimited.code:
                self.metrics.key_refusals.labels(key_id, call.model).inc()

    async def _abort(self, context: grpc.aio.ServicerContext, method: str, call: Call, status: grpc.StatusCode,
                     exc: ServiceError, request_id: str) -> None:
        self.metrics.errors.labels(call.model, exc.code).inc()
        details = exc.message
        if isinstance(exc, InferenceFailed):
            error_id = new_error_id()
            logger.error("%s failed, error id %s: %s", method, error_id, exc, extra={"error_id": error_id})
            details = with_error_id(exc.message, error_id)
        elif logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s answered %s %s: %s", method, status.name, exc.code, exc.message)
        await context.abort(status, details, ((REQUEST_ID_KEY, request_id), *trailers_for(exc), *_traceparent()))
