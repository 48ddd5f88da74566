"""FastAPI dependencies shared by the routes: the API key checks (the data plane's, with the key the request
carries). A request's deadline and the overload refusal are app.transport.http.deadlines."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request

from app.dataplane.access import AccessPolicy, Operation, given_key
from app.dataplane.plane import DataPlane
from app.models.registry import ModelRegistry


async def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


async def get_dataplane(request: Request) -> DataPlane:
    return request.app.state.dataplane


def _check_access(request: Request, operation: Operation) -> None:
    """The data plane's access check (`app.dataplane.access`) with the key the request carries and the model
    its path names; the accepted key is kept as `request.state.api_key` (None when none was needed) for the
    route to check a model it chooses itself (`check_chosen_model`)."""
    access: AccessPolicy = request.app.state.dataplane.access
    request.state.api_key = None
    if access.requires_key(operation):
        request.state.api_key = access.check(given_key(request.headers.get("x-api-key"), request.headers.get("authorization")),
                                               operation, request.path_params.get("name"))


def check_chosen_model(request: Request, model: str) -> None:
    """`Forbidden` unless the request's key may use `model`, the one the route chose (the default one)."""
    AccessPolicy.check_model(request.state.api_key, model)


async def require_api_key(request: Request) -> None:
    """Model operations: a key, when keys are configured (`SERVE_API_KEY(S)`, `SERVE_API_KEYS_FILE`)."""
    _check_access(request, Operation.MODELS)


async def require_admin_key(request: Request) -> None:
    """Repository operations (loading and unloading models) always need a key of role admin: with none
    configured they are closed."""
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
