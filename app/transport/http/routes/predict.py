"""`POST /predict`: an image (multipart upload, raw body or base64 JSON) or text (JSON) to labels."""

from __future__ import annotations

import base64
import binascii
import json

from fastapi import APIRouter, Depends, Request, Response
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.dataplane.plane import DataPlane
from app.dataplane.predict import PredictInputs
from app.errors import InvalidInput, UnprocessableInput, UnsupportedMediaType
from app.settings import Settings
from app.transport.http.deadlines import client_gone, refuse_if_overloaded, request_deadline
from app.transport.http.dependencies import (
    require_api_key,
)
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


def _decode_base64(value: str, position: int) -> bytes:
    if value.startswith("data:"):
        value = value.partition(",")[2]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"image {position} is not valid base64") from None


async def _read_json(request: Request, model: str | None, top_k: int | None) -> PredictInputs:
    """The inputs of a JSON body; its `model` and `top_k` before the query's."""
    try:
        body = PredictRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}" for error in exc.errors()
        )
        raise UnprocessableInput(f"invalid JSON body: {problems}") from None
    if body.text is not None:
        texts = body.text if isinstance(body.text, list) else [body.text]
        return PredictInputs("text", texts, isinstance(body.text, list), body.model or model, body.top_k or top_k)
    images = body.image if isinstance(body.image, list) else [body.image]
    decoded = [_decode_base64(value, position) for position, value in enumerate(images)]
    return PredictInputs("image", decoded, isinstance(body.image, list), body.model or model, body.top_k or top_k)


async def _read_multipart(request: Request, settings: Settings, model: str | None,
                          top_k: int | None) -> PredictInputs:
    """The images of a multipart body; its `model` and `top_k` fields before the query's."""
    try:
        form = await request.form(max_files=settings.max_items_per_request, max_fields=16)
    except StarletteHTTPException as exc:  # Starlette's 400 for too many files or fields, or a broken body
        raise UnprocessableInput(f"invalid multipart body: {exc.detail}") from None
    try:
        uploads = [item for key in ("file", "files") for item in form.getlist(key)]
        if not uploads or not all(isinstance(item, UploadFile) for item in uploads):
            raise UnprocessableInput("multipart body needs one or more image files in the `file` field")
        images = [await upload.read() for upload in uploads]
        form_model = form.get("model")
        form_top_k = form.get("top_k")
    finally:
        await form.close()
    return PredictInputs("image", images, len(images) > 1, (form_model if isinstance(form_model, str) else None) or model,
                         _parse_top_k(form_top_k, "form field top_k") or top_k)


def _parse_top_k(value: object, where: str) -> int | None:
    """A `top_k` sent as text (query string or form field): None when absent, else an integer in range."""
    if value is None:
        return None
    digits = isinstance(value, str) and value.isascii() and value.isdigit()  # int() refuses '²', isdigit() not
    if not digits or not 1 <= int(value) <= MAX_TOP_K:
        raise UnprocessableInput(f"invalid request: {where} must be an integer from 1 to {MAX_TOP_K}")
    return int(value)


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
        422: {"description": "malformed request"},
        503: {"description": "model not ready, queue full, deadline passed or shutting down (see Retry-After)"},
    },
)
async def predict(request: Request) -> Response:
    """Classify text sent as JSON (`{"text": "..."}` or a list), or images sent as a multipart
    `file` upload, a raw `image/*` body, or base64 in JSON (`{"image": "..."}` or a list).

    One input gets one prediction; a list (or several files) gets `predictions` in the same order.
    """
    dataplane: DataPlane = request.app.state.dataplane
    model = request.query_params.get("model")
    top_k = _parse_top_k(request.query_params.get("top_k"), "query parameter top_k")
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type == "application/json":
        inputs = await _read_json(request, model, top_k)
    elif media_type == "multipart/form-data":
        inputs = await _read_multipart(request, dataplane.settings, model, top_k)
    elif media_type.startswith("image/") or media_type == "application/octet-stream":
        inputs = PredictInputs("image", [await request.body()], False, model, top_k)
    else:
        raise UnsupportedMediaType(
            f"unsupported Content-Type {media_type or '(none)'!r}: send application/json, "
            "multipart/form-data or an image/* body"
        )
    served = dataplane.predict_model(inputs)
    request.state.model = served.name
    answer = await dataplane.predict(served, inputs, request_deadline(request), client_gone(request))
    # Built by the data plane, so it skips re-validation against `response_model` (kept for the docs).
    return Response(json.dumps(answer, separators=(",", ":")), media_type="application/json")
