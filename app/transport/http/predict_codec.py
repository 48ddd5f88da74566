"""`POST /predict` over HTTP: its request (JSON, multipart upload or a raw image body, with query parameters)
read into the data plane's `PredictInputs`."""

from __future__ import annotations

import base64
import binascii

from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request

from app.dataplane.predict import PredictInputs
from app.errors import InvalidInput, UnprocessableInput, UnsupportedMediaType
from app.settings import Settings
from app.transport.http.schemas import MAX_TOP_K, PredictRequest


async def read_inputs(request: Request, settings: Settings) -> PredictInputs:
    """What the request asks for; the body's `model` and `top_k` come before the query's."""
    model = request.query_params.get("model")
    top_k = _parse_top_k(request.query_params.get("top_k"), "query parameter top_k")
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type == "application/json":
        return await _read_json(request, model, top_k)
    if media_type == "multipart/form-data":
        return await _read_multipart(request, settings, model, top_k)
    if media_type.startswith("image/") or media_type == "application/octet-stream":
        return PredictInputs("image", [await request.body()], False, model, top_k)
    raise UnsupportedMediaType(
        f"unsupported Content-Type {media_type or '(none)'!r}: send application/json, "
        "multipart/form-data or an image/* body"
    )


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
