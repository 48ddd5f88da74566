"""The gRPC server of one server process, built in one place (`create_server`) and run beside the HTTP
application for as long as it serves (`GrpcTransport`), on `SERVE_HOST:SERVE_GRPC_PORT`.

It shares the process's data plane, metrics and intake load with HTTP: a gRPC request joins the same model
queues and batches as a REST request. Its messages are limited to `SERVE_MAX_BODY_BYTES` (larger ones get
RESOURCE_EXHAUSTED from gRPC itself); it serves TLS with `SERVE_TLS_CERT_FILE` / `SERVE_TLS_KEY_FILE` as HTTP
does. Each of several worker processes binds the port with `SO_REUSEPORT`, as their HTTP sockets do
(app.topology.reuse_port); a single process binds it alone, so a second server on the port fails to start.
On SIGTERM the registry's intake stop answers new RPCs UNAVAILABLE and readiness NOT_SERVING; once the HTTP
server has drained, `stop` lets the RPCs in flight finish within `SERVE_GRACEFUL_SHUTDOWN_S`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2_grpc
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from opentelemetry.instrumentation.grpc.filters import health_check, negate

from app.dataplane.plane import DataPlane
from app.intake_load import IntakeLoad
from app.observability import tracing
from app.observability.metrics import Metrics
from app.settings import Settings
from app.transport.grpc.calls import Calls
from app.transport.grpc.generated import grpc_service_pb2_grpc as pb_grpc
from app.transport.grpc.servicer import HealthServicer, InferenceServicer

logger = logging.getLogger(__name__)


def create_server(settings: Settings, dataplane: DataPlane, metrics: Metrics, load: IntakeLoad, *,
                  reuse_port: bool) -> grpc.aio.Server:
    """The server with its services, bound to `SERVE_HOST:SERVE_GRPC_PORT` (RuntimeError when it cannot bind),
    not yet started; with tracing on (app.observability.tracing), OpenTelemetry's gRPC server interceptor."""
    assert settings.grpc_port is not None, "the gRPC transport runs only with SERVE_GRPC_PORT"
    interceptors: list[grpc.aio.ServerInterceptor] = [RequestParsing()]
    if tracing.on():  # outermost: the RPC's SERVER span, continuing the caller's traceparent, covers the parsing
        interceptors.insert(0, aio_server_interceptor(filter_=negate(health_check())))  # probes: not traced
    server = grpc.aio.server(interceptors=interceptors, options=[
        ("grpc.max_receive_message_length", settings.max_body_bytes),
        ("grpc.so_reuseport", int(reuse_port)),
    ])
    calls = Calls(dataplane, metrics, load)
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(dataplane, calls), server)
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(dataplane, calls), server)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    address = f"{host}:{settings.grpc_port}"
    if settings.tls_cert_file is not None and settings.tls_key_file is not None:
        credentials = grpc.ssl_server_credentials([(settings.tls_key_file.read_bytes(),
                                                    settings.tls_cert_file.read_bytes())])
        server.add_secure_port(address, credentials)
    else:
        server.add_insecure_port(address)
    return server


class RequestParsing(grpc.aio.ServerInterceptor):
    """A unary request that is no valid message of its method's type gets INVALID_ARGUMENT (gRPC itself would
    answer UNKNOWN, naming the Python exception): each unary handler parses its request itself."""

    def __init__(self) -> None:
        self._handlers: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None or handler.request_deserializer is None:
            return handler
        known = self._handlers.get(details.method)
        if known is None or known[0] is not handler:
            known = (handler, _parsing(handler))
            self._handlers[details.method] = known
        return known[1]


def _parsing(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    parse, answer = handler.request_deserializer, handler.unary_unary

    async def parse_then_answer(data: bytes, context: grpc.aio.ServicerContext) -> Any:
        try:
            request = parse(data)
        except DecodeError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the request is not a valid protobuf message of "
                                "this method's request type")
        return await answer(request, context)

    return grpc.unary_unary_rpc_method_handler(parse_then_answer, response_serializer=handler.response_serializer)


class GrpcTransport:
    """Serves gRPC in this process while the HTTP application runs (its lifespan enters `serving`)."""

    def __init__(self, settings: Settings, *, reuse_port: bool) -> None:
        self.settings = settings
        self.reuse_port = reuse_port

    @asynccontextmanager
    async def serving(self, dataplane: DataPlane, metrics: Metrics, load: IntakeLoad) -> AsyncIterator[None]:
        settings = self.settings
        server = create_server(settings, dataplane, metrics, load, reuse_port=self.reuse_port)
        await server.start()
        logger.info("serving gRPC (Open Inference Protocol v2) on %s:%d", settings.host, settings.grpc_port)
        try:
            yield
        finally:
            logger.info("stopping gRPC: finishing the RPCs in flight")
            await server.stop(settings.graceful_shutdown_s)
