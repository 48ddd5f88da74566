"""The FastAPI application: `create_app()` wires settings, models, routes, metrics and errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Protocol

from fastapi import FastAPI

from app.dataplane.plane import DataPlane
from app.dataplane.quotas import Quotas
from app.intake_load import IntakeLoad
from app.models.registry import ModelRegistry
from app.observability import tracing
from app.observability.metrics import Metrics
from app.settings import Settings
from app.topology.model_factories import front_end_models, local_models
from app.topology.roles import ServerRole
from app.topology.workers import KEY_QUOTAS
from app.transport.http.api_docs import install_api_docs
from app.transport.http.errors import install_error_handlers
from app.transport.http.middleware import BodySizeLimit, RequestId, RequestMetrics
from app.transport.http.routes import health, predict, v2
from app.transport.http.routes.request_route import DirectRoutes, RequestRoute
from app.transport.http.tracing import ServerSpans, excluded_paths

logger = logging.getLogger(__name__)

DESCRIPTION = """
Image and text classifiers served with ONNX Runtime and dynamic batching.

* `POST /predict` classifies an image (multipart upload, raw `image/*` body or base64 JSON) or text (JSON).
* `GET /health`, `/health/live`, `/health/ready` for people and Kubernetes probes; `GET /metrics` for Prometheus.
* `/v2/...` speaks the Open Inference Protocol v2 (KServe / Triton) with JSON or binary tensors.
"""


class Transport(Protocol):
    """Another transport served by this process beside HTTP (app.transport.grpc): it serves while `serving` is
    entered, over the same data plane, metrics and intake load."""

    def serving(self, dataplane: DataPlane, metrics: Metrics, load: IntakeLoad) -> AbstractAsyncContextManager[None]: ...


def create_app(settings: Settings, role: ServerRole, transports: Sequence[Transport] = ()) -> FastAPI:
    """Build the service for one server process playing `role` in the topology `python -m app` chose (alone,
    or one of several workers), serving `transports` too for as long as it runs. Models load in the background
    after start-up; `/health/ready` says when."""
    workers = role.board()
    load = IntakeLoad()
    metrics = Metrics(workers)
    metrics.follow_in_flight(load)
    make_model = (front_end_models(settings, metrics, load, role.directory)
                  if role.shared_inference and role.directory is not None
                  else local_models(settings, metrics, load, role.timing_turn()))
    registry = ModelRegistry(settings, metrics, make_model, workers)
    # The keys' quotas hold for the whole instance: one table shared by every worker (app.dataplane.quotas).
    quotas = Quotas.private() if role.directory is None else Quotas.shared(role.directory / KEY_QUOTAS, role.workers)
    dataplane = DataPlane(settings, registry, quotas)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry.discover()
        loading = asyncio.create_task(registry.load_all(), name="load-models")
        if settings.strict_startup:
            await loading  # raises when a model cannot be served: start-up fails and the process exits
        try:
            async with AsyncExitStack() as others:
                for transport in transports:
                    await others.enter_async_context(transport.serving(dataplane, metrics, load))
                yield
            # Here the HTTP server has drained, and every other transport too.
        finally:
            logger.info("shutting down: draining model queues")
            loading.cancel()  # a model still loading is not waited for; its thread ends with the process
            await asyncio.gather(loading, return_exceptions=True)
            await registry.drain()
            tracing.shutdown_tracing()  # after the drain: the last batches' spans are exported too

    app = FastAPI(title="ONNX classifier serving", version="0.1.0", description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None,  # app.transport.http.api_docs serves them
                  # FastAPI's own OpenTelemetry spans and metrics, on as soon as a tracer provider is set, cost
                  # more than the service's (app.transport.http.tracing; docs/benchmarks.md, "Tracing")
                  telemetry={"tracing": False, "metrics": False, "logs": False})
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.registry = registry
    app.state.dataplane = dataplane
    install_error_handlers(app)
    routers = (predict.router, health.router, v2.router, v2.infer_router)
    for router in routers:
        app.include_router(router)
    install_api_docs(app, settings, routers)
    direct = [route for router in (predict.router, v2.infer_router) for route in router.routes
              if isinstance(route, RequestRoute)]
    app.add_middleware(DirectRoutes, routes=direct, exception_handlers=app.exception_handlers)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics, load=load)
    app.add_middleware(RequestId)
    if tracing.on():  # outside every other middleware: the server span covers the whole request
        app.add_middleware(ServerSpans, excluded=excluded_paths())
    return app
