"""Health, readiness, model listing and Prometheus metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.dataplane.plane import DataPlane
from app.models.registry import ModelRegistry
from app.transport.http.dependencies import (
    get_dataplane,
    get_registry,
    health_access,
    metrics_access,
    require_api_key,
)
from app.transport.http.schemas import (
    BatchTimingDescription,
    HealthResponse,
    ModelDescription,
    ModelsResponse,
    ReferenceDescription,
    WorkerStatus,
)

router = APIRouter()
# Open unless SERVE_PUBLIC_HEALTH / SERVE_PUBLIC_METRICS close them (then they need an API key).
HealthAccess = [Depends(health_access)]
Registry = Annotated[ModelRegistry, Depends(get_registry)]


@router.get("/health", response_model=HealthResponse, tags=["health"], dependencies=HealthAccess)
async def health(registry: Registry) -> HealthResponse:
    """Liveness with per-model detail. Always 200 while the process answers; see `ready`."""
    ready = registry.ready
    workers = inference = None
    if registry.workers is not None:
        workers = [WorkerStatus(pid=pid, ready=ok) for pid, ok in sorted(registry.workers.workers().items())]
        inference = next((WorkerStatus(pid=pid, ready=ok)
                          for pid, ok in registry.workers.inference_processes().items()), None)
    return HealthResponse(status="ready" if ready else "not_ready", live=True, ready=ready, models=registry.status(),
                          default_models=registry.default_models(), workers=workers, inference_process=inference)


@router.get("/health/live", tags=["health"], dependencies=HealthAccess)
async def live() -> dict[str, str]:
    """Kubernetes liveness probe: 200 while the process serves HTTP."""
    return {"status": "live"}


@router.get(
    "/health/ready",
    tags=["health"],
    responses={503: {"description": "a configured model is not loaded and warmed up yet, or failed, or the "
                                   "server is shutting down"}},
    dependencies=HealthAccess,
)
async def ready(dataplane: Annotated[DataPlane, Depends(get_dataplane)]) -> JSONResponse:
    """Kubernetes readiness probe: 200 only when every configured model is loaded and warmed up, and the
    server is not shutting down."""
    readiness = dataplane.readiness()
    if readiness.ready:
        return JSONResponse({"status": "ready"})
    return JSONResponse({"status": "not_ready", "error": readiness.reason, "models": readiness.models_not_ready},
                        status_code=503, headers={"Retry-After": "5"})


@router.get("/models", response_model=ModelsResponse, tags=["models"], dependencies=[Depends(require_api_key)])
async def list_models(registry: Registry) -> ModelsResponse:
    """The served models: versions, state, labels, tensors, preprocessing and held-out metrics."""
    described = []
    defaults = registry.default_models()
    for model in registry.models.values():
        config = model.config
        described.append(ModelDescription(
            **model.status(),
            default=defaults.get(config.task, {}).get("model") == model.name,
            labels=config.labels,
            inputs=[spec.model_dump() for spec in config.inputs],
            outputs=[spec.model_dump() for spec in config.outputs],
            preprocessing=config.preprocessing.model_dump(),
            max_batch_size=model.max_batch_size,
            max_padded_tokens=model.max_padded_tokens,
            max_padding=model.max_padding,
            configured_max_batch_size=model.configured_max_batch_size,
            intra_op_threads=model.intra_op_threads,
            batch_size_curve=[
                BatchTimingDescription(batch_size=timing.batch_size, ms_per_batch=timing.seconds_per_batch * 1000,
                                       items_per_s=timing.items_per_s)
                for timing in model.batch_curve
            ],
            metrics=config.metrics.model_dump() if config.metrics else None,
            reference=None if model.reference is None else ReferenceDescription(
                **model.reference.model_dump(include={"source", "description", "num_samples", "accuracy"})),
            reference_error=model.reference_error,
            low_confidence_threshold=model.low_confidence_threshold,
        ))
    return ModelsResponse(models=described, default_models=defaults)


@router.get("/metrics", tags=["health"], response_class=Response, dependencies=[Depends(metrics_access)])
async def metrics(request: Request) -> Response:
    """Prometheus metrics in the text exposition format."""
    return Response(generate_latest(request.app.state.metrics.exposition), media_type=CONTENT_TYPE_LATEST)
