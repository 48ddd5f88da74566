"""The Open Inference Protocol v2 REST API (KServe / Triton), served through the same batchers."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from app.errors import InvalidInput, ModelNotFound
from app.models.registry import ModelRegistry
from app.models.served_model import NUMPY_DTYPES, ServedModel
from app.transport.http.dependencies import (
    client_gone,
    get_registry,
    health_access,
    refuse_if_overloaded,
    request_deadline,
    require_admin_key,
    require_api_key,
)
from app.transport.http.routes.request_route import RequestRoute
from app.transport.http.v2_codec import (
    CONFIG_DTYPE_TO_DATATYPE,
    HEADER_LENGTH,
    InferenceRequest,
    encode_response,
    parse_request,
)

router = APIRouter(prefix="/v2", tags=["open inference protocol v2"])
# `infer` is the hot path: a RequestRoute, documented by FastAPI but called directly (see request_route.py).
infer_router = APIRouter(prefix="/v2", tags=["open inference protocol v2"], route_class=RequestRoute)
Registry = Annotated[ModelRegistry, Depends(get_registry)]
SERVER_NAME = "onnx-classifier-serving"
SERVER_VERSION = "0.1.0"


def _model(registry: ModelRegistry, name: str, version: str | None) -> ServedModel:
    model = registry.get(name)
    if version is not None and version != str(model.config.version):
        raise ModelNotFound(f"model {name!r} is served at version {model.config.version}, not {version!r}")
    return model


def _tensor_metadata(specs: list[Any]) -> list[dict[str, Any]]:
    return [
        {"name": spec.name, "datatype": CONFIG_DTYPE_TO_DATATYPE[spec.dtype],
         "shape": [dim if isinstance(dim, int) else -1 for dim in spec.shape]}
        for spec in specs
    ]


@router.get("")
async def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": ["binary_tensor_data", "model_configuration"]}


@router.get("/health/live", dependencies=[Depends(health_access)])
async def server_live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready", responses={503: {"description": "not every configured model is ready"}},
            dependencies=[Depends(health_access)])
async def server_ready(registry: Registry) -> JSONResponse:
    ready = registry.ready
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


@router.get("/models/{name}", dependencies=[Depends(require_api_key)])
@router.get("/models/{name}/versions/{version}", dependencies=[Depends(require_api_key)])
async def model_metadata(registry: Registry, name: str, version: str | None = None) -> dict[str, Any]:
    model = _model(registry, name, version)
    return {
        "name": model.name,
        "versions": [str(model.config.version)],
        "platform": "onnxruntime_onnx",
        "inputs": _tensor_metadata(model.config.inputs),
        "outputs": _tensor_metadata(model.config.outputs),
    }


@router.get("/models/{name}/config", dependencies=[Depends(require_api_key)])
@router.get("/models/{name}/versions/{version}/config", dependencies=[Depends(require_api_key)])
async def model_config(registry: Registry, name: str, version: str | None = None) -> dict[str, Any]:
    """Triton's model configuration extension: batching limit, tensors and labels."""
    model = _model(registry, name, version)
    return {
        "name": model.name,
        "platform": "onnxruntime_onnx",
        "max_batch_size": model.max_batch_size,
        "input": [{"name": item["name"], "data_type": "TYPE_" + item["datatype"], "dims": item["shape"][1:]}
                  for item in _tensor_metadata(model.config.inputs)],
        "output": [{"name": item["name"], "data_type": "TYPE_" + item["datatype"], "dims": item["shape"][1:]}
                   for item in _tensor_metadata(model.config.outputs)],
        "parameters": {"labels": {"string_value": ",".join(model.config.labels)}},
    }


@router.get("/models/{name}/ready", responses={503: {"description": "the model is not ready"}},
            dependencies=[Depends(health_access)])
@router.get("/models/{name}/versions/{version}/ready", responses={503: {"description": "the model is not ready"}},
            dependencies=[Depends(health_access)])
async def model_ready(registry: Registry, name: str, version: str | None = None) -> JSONResponse:
    model = _model(registry, name, version)
    return JSONResponse({"name": model.name, "ready": model.ready}, status_code=200 if model.ready else 503)


def _rows(model: ServedModel, tensors: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Check the tensors against the model's inputs and split them into rows for the batcher."""
    specs = {spec.name: spec for spec in model.config.inputs}
    if set(tensors) != set(specs):
        raise InvalidInput(f"model {model.name!r} takes inputs {sorted(specs)}; got {sorted(tensors)}")
    batch = None
    for name, array in tensors.items():
        spec = specs[name]
        if array.dtype != NUMPY_DTYPES[spec.dtype]:
            raise InvalidInput(f"input {name!r} must be {CONFIG_DTYPE_TO_DATATYPE[spec.dtype]}")
        fixed_ok = len(array.shape) == len(spec.shape) and all(
            not isinstance(want, int) or got == want for got, want in zip(array.shape[1:], spec.shape[1:])
        )
        if not fixed_ok or array.shape[0] < 1 or 0 in array.shape:
            raise InvalidInput(f"input {name!r} has shape {list(array.shape)}; the model takes "
                               f"{[dim if isinstance(dim, int) else -1 for dim in spec.shape]}")
        if batch is not None and array.shape[:2] != batch:
            raise InvalidInput("all inputs must share their batch (and sequence) dimensions")
        batch = array.shape[:2]
    count = next(iter(tensors.values())).shape[0]
    return [{name: array[index] for name, array in tensors.items()} for index in range(count)]


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


@infer_router.post("/models/{name}/infer", openapi_extra=_infer_openapi("name"))
@infer_router.post("/models/{name}/versions/{version}/infer", openapi_extra=_infer_openapi("name", "version"))
async def infer(request: Request) -> Response:
    """Run the model on raw input tensors (JSON `data` or binary) and return the requested outputs."""
    refuse_if_overloaded(request)
    await require_api_key(request)
    registry: ModelRegistry = request.app.state.registry
    name, version = request.path_params["name"], request.path_params.get("version")
    body = await request.body()
    # From here to the batcher's queue nothing awaits, so a model swap (POST .../load) cannot come between.
    model = _model(registry, name, version)
    request.state.model = model.name
    inference, tensors = parse_request(body, request.headers.get(HEADER_LENGTH))
    rows = _rows(model, tensors)
    output_names = tuple(item.name for item in inference.outputs or [])
    answers = await model.infer(rows, output_names, request_deadline(request), client_gone(request))
    outputs = {key: np.stack([answer[key] for answer in answers]) for key in answers[0]}
    body, header_length = encode_response(model.name, str(model.config.version), inference, outputs)
    if header_length is None:
        return Response(body, media_type="application/json")
    return Response(body, media_type="application/octet-stream", headers={"Inference-Header-Content-Length": str(header_length)})


@router.post("/repository/models/{name}/load", dependencies=[Depends(require_admin_key)],
             responses={400: {"description": "the new version cannot be served; the old one keeps serving"},
                        403: {"description": "no API key is configured"}, 404: {"description": "no such model"}})
async def load_model(registry: Registry, name: str) -> dict[str, Any]:
    """Serve the latest version of `name` in the repository: it loads and warms up beside the version
    serving, takes the traffic once ready, and the old version finishes its queue and is freed."""
    model = await registry.load(name)
    return {"name": model.name, "version": str(model.config.version), "state": model.state.value}


@router.post("/repository/models/{name}/unload", dependencies=[Depends(require_admin_key)],
             responses={403: {"description": "no API key is configured"}, 404: {"description": "not loaded"}})
async def unload_model(registry: Registry, name: str) -> dict[str, Any]:
    """Stop serving `name`: queued requests are answered, later ones get 404."""
    await registry.unload(name)
    return {"name": name, "state": "unloaded"}
