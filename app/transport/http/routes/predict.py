"""`POST /predict`: an image (multipart upload, raw body or base64 JSON) or text (JSON) to labels: the request
read by `predict_codec`, answered by the data plane."""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Request, Response

from app.dataplane.plane import DataPlane
from app.observability import tracing
from app.transport.http.deadlines import client_gone, refuse_if_overloaded, request_deadline
from app.transport.http.dependencies import check_chosen_model, require_api_key
from app.transport.http.predict_codec import read_inputs
from app.transport.http.routes.request_route import RequestRoute
from app.transport.http.schemas import MAX_TOP_K, BatchPredictResponse, PredictRequest, PredictResponse

router = APIRouter(route_class=RequestRoute)

_OPENAPI_BODIES = {
    "parameters": [
        {"name": "model", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "model name; without it, the default model of the input's kind answers (`default_models` "
                        "in /models)"},
        {"name": "top_k", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 1, "maximum": MAX_TOP_K}, "description": "labels to return"},
        {"name": "X-Request-Timeout", "in": "header", "required": False, "schema": {"type": "number"},
         "description": "milliseconds the client will wait, capped by SERVE_REQUEST_TIMEOUT_S; a request still "
                        "queued then gets 503 deadline_exceeded and never runs"},
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": PredictRequest.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "array", "items": {"type": "string", "format": "binary"},
                                 "description": "one or more image files"},
                        "model": {"type": "string"},
                        "top_k": {"type": "integer", "minimum": 1, "maximum": MAX_TOP_K},
                    },
                    "required": ["file"],
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


@router.post(
    "/predict",
    response_model=PredictResponse | BatchPredictResponse,
    tags=["predict"],
    summary="Classify an image or a text",
    openapi_extra=_OPENAPI_BODIES,
    dependencies=[Depends(refuse_if_overloaded), Depends(require_api_key)],
    responses={
        400: {"description": "the input cannot be used (not an image, bad base64, wrong model kind), or no model "
                             "is named and its kind has several models and no default"},
        404: {"description": "no such model, or no model is named and its kind's default is not loaded"},
        413: {"description": "body or image too large"},
        415: {"description": "unsupported Content-Type"},
        403: {"description": "the key's model scope excludes the model (the default one included)"},
        422: {"description": "malformed request"},
        429: {"description": "the key is over its rate or in-flight limit (see Retry-After)"},
        503: {"description": "model not ready, queue full, deadline passed or shutting down (see Retry-After)"},
    },
)
async def predict(request: Request) -> Response:
    """Classify text sent as JSON (`{"text": "..."}` or a list), or images sent as a multipart
    `file` upload, a raw `image/*` body, or base64 in JSON (`{"image": "..."}` or a list).

    One input gets one prediction; a list (or several files) gets `predictions` in the same order.
    """
    dataplane: DataPlane = request.app.state.dataplane
    with tracing.span("read"):
        inputs = await read_inputs(request, dataplane.settings)
    served = dataplane.predict_model(inputs)
    request.state.model = served.name
    check_chosen_model(request, served.name)  # the key's model scope, the default model included
    with dataplane.admit(request.state.api_key, served):  # the key's quotas, held until the answer
        answer = await dataplane.predict(served, inputs, request_deadline(request), client_gone(request))
    # Built by the data plane, so it skips re-validation against `response_model` (kept for the docs).
    with tracing.span("answer"):
        return Response(json.dumps(answer, separators=(",", ":")), media_type="application/json")
