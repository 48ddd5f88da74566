"""The Open Inference Protocol v2 REST API (KServe / Triton): each route a thin call into the data plane
(`app.dataplane`), with the protocol's JSON documents and binary extension (`app.transport.http.v2_codec`)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from app.dataplane.metadata import TensorMetadata
from app.dataplane.plane import DataPlane
from app.observability import tracing
from app.transport.http.deadlines import client_gone, refuse_if_overloaded, request_deadline
from app.transport.http.dependencies import (
    get_dataplane,
    health_access,
    require_admin_key,
    require_api_key,
)
from app.transport.http.routes.request_route import RequestRoute
from app.transport.http.v2_codec import HEADER_LENGTH, InferenceRequest, encode_response, parse_request

router = APIRouter(prefix="/v2", tags=["open inference protocol v2"])
# `infer` is the hot path: a RequestRoute, documented by FastAPI but called directly (see request_route.py).
infer_router = APIRouter(prefix="/v2", tags=["open inference protocol v2"], route_class=RequestRoute)
Plane = Annotated[DataPlane, Depends(get_dataplane)]


@router.get("")
async def server_metadata(dataplane: Plane) -> dict[str, Any]:
    return asdict(dataplane.server_metadata())


@router.get("/health/live", dependencies=[Depends(health_access)])
async def server_live(dataplane: Plane) -> dict[str, bool]:
    return {"live": dataplane.live()}


@router.get("/health/ready", responses={503: {"description": "not every configured model is ready"}},
            dependencies=[Depends(health_access)])
async def server_ready(dataplane: Plane) -> JSONResponse:
    ready = dataplane.ready()
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


@router.get("/models/{name}", dependencies=[Depends(require_api_key)])
@router.get("/models/{name}/versions/{version}", dependencies=[Depends(require_api_key)])
async def model_metadata(dataplane: Plane, name: str, version: str | None = None) -> dict[str, Any]:
    return asdict(dataplane.model_metadata(name, version))


def _config_tensors(tensors: list[TensorMetadata]) -> list[dict[str, Any]]:
    return [{"name": tensor.name, "data_type": "TYPE_" + tensor.datatype, "dims": tensor.shape[1:]}
            for tensor in tensors]


@router.get("/models/{name}/config", dependencies=[Depends(require_api_key)])
@router.get("/models/{name}/versions/{version}/config", dependencies=[Depends(require_api_key)])
async def model_config(dataplane: Plane, name: str, version: str | None = None) -> dict[str, Any]:
    """Triton's model configuration extension: batching limit, tensors and labels."""
    config = dataplane.model_configuration(name, version)
    return {
        "name": config.name,
        "platform": config.platform,
        "max_batch_size": config.max_batch_size,
        "input": _config_tensors(config.inputs),
        "output": _config_tensors(config.outputs),
        "parameters": {"labels": {"string_value": ",".join(config.labels)}},
    }


@router.get("/models/{name}/ready", responses={503: {"description": "the model is not ready"}},
            dependencies=[Depends(health_access)])
@router.get("/models/{name}/versions/{version}/ready", responses={503: {"description": "the model is not ready"}},
            dependencies=[Depends(health_access)])
async def model_ready(dataplane: Plane, name: str, version: str | None = None) -> JSONResponse:
    readiness = dataplane.model_ready(name, version)
    return JSONResponse(asdict(readiness), status_code=200 if readiness.ready else 503)


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema with its `$defs` references replaced by the definitions (for `openapi_extra`,
    whose schemas FastAPI does not register as components)."""
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(definitions[node["$ref"].rsplit("/", 1)[-1]])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    return inline(schema)


def _infer_openapi(*path_names: str) -> dict[str, Any]:
    """The infer route's parameters and bodies, which its endpoint reads itself."""
    path = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in path_names]
    headers = [
        {"name": "Inference-Header-Content-Length", "in": "header", "required": False,
         "schema": {"type": "integer", "minimum": 0},
         "description": "binary tensor extension: the length of the JSON head; raw tensor bytes follow it"},
        {"name": "X-Request-Timeout", "in": "header", "required": False, "schema": {"type": "number"},
         "description": "milliseconds the client will wait, capped by SERVE_REQUEST_TIMEOUT_S"},
    ]
    return {
        "parameters": path + headers,
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": _inlined(InferenceRequest.model_json_schema())},
                "application/octet-stream": {
                    "schema": {"type": "string", "format": "binary"},
                    "description": "a JSON head of Inference-Header-Content-Length bytes, then the tensors",
                },
            },
        },
    }


_INFER_DEPENDENCIES = [Depends(refuse_if_overloaded), Depends(require_api_key)]


@infer_router.post("/models/{name}/infer", openapi_extra=_infer_openapi("name"), dependencies=_INFER_DEPENDENCIES)
@infer_router.post("/models/{name}/versions/{version}/infer", openapi_extra=_infer_openapi("name", "version"),
                   dependencies=_INFER_DEPENDENCIES)
async def infer(request: Request) -> Response:
    """Run the model on raw input tensors (JSON `data` or binary) and return the requested outputs."""
    dataplane: DataPlane = request.app.state.dataplane
    with tracing.span("read"):
        body = await request.body()
    # From here to the batcher's queue nothing awaits, so a model swap (POST .../load) cannot come between.
    model = dataplane.model(request.path_params["name"], request.path_params.get("version"))
    request.state.model = model.name
    with dataplane.admit(request.state.api_key, model):  # the key's quotas, held until the answer
        with tracing.span("parse"):
            inference, tensors = parse_request(body, request.headers.get(HEADER_LENGTH))
            rows = dataplane.rows(model, tensors)
        output_names = tuple(item.name for item in inference.outputs or [])
        outputs = await dataplane.infer(model, rows, output_names, request_deadline(request),
                                        client_gone(request))
    with tracing.span("answer"):
        body, header_length = encode_response(model.name, str(model.config.version), inference, outputs)
    if header_length is None:
        return Response(body, media_type="application/json")
    return Response(body, media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(header_length)})


@router.post("/repository/models/{name}/load", dependencies=[Depends(require_admin_key)],
             responses={400: {"description": "the new version cannot be served; the old one keeps serving"},
                        403: {"description": "no API key is configured, or the key is not admin or its models exclude this one"}, 404: {"description": "no such model"}})
async def load_model(dataplane: Plane, name: str) -> dict[str, Any]:
    """Serve the latest version of `name` in the repository: it loads and warms up beside the version
    serving, takes the traffic once ready, and the old version finishes its queue and is freed."""
    model = await dataplane.load(name)
    return {"name": model.name, "version": str(model.config.version), "state": model.state.value}


@router.post("/repository/models/{name}/unload", dependencies=[Depends(require_admin_key)],
             responses={403: {"description": "no API key is configured, or the key is not admin or its models exclude this one"}, 404: {"description": "not loaded"}})
async def unload_model(dataplane: Plane, name: str) -> dict[str, Any]:
    """Stop serving `name`: queued requests are answered, later ones get 404."""
    await dataplane.unload(name)
    return {"name": name, "state": "unloaded"}
