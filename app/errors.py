"""Errors the service answers with, and the handlers that turn every failure into a JSON body.

Every error body is `{"error": "<message a user can act on>", "code": "<machine-readable kind>"}`;
the `error` string is also what the Open Inference Protocol v2 expects.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """An error with the HTTP status, machine-readable code and message to answer with."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers


class InvalidInput(ServiceError):
    status_code = 400
    code = "invalid_input"


class UnprocessableInput(ServiceError):
    status_code = 422
    code = "invalid_request"


class Unauthorized(ServiceError):
    status_code = 401
    code = "unauthorized"


class ModelNotFound(ServiceError):
    status_code = 404
    code = "model_not_found"


class PayloadTooLarge(ServiceError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(ServiceError):
    status_code = 415
    code = "unsupported_media_type"


class Unavailable(ServiceError):
    """The service cannot take the request now; clients should retry after `retry_after` seconds."""

    status_code = 503
    code = "unavailable"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class ModelNotReady(Unavailable):
    code = "model_not_ready"


class QueueFull(Unavailable):
    code = "queue_full"


class DeadlineExceeded(Unavailable):
    code = "deadline_exceeded"


class ShuttingDown(Unavailable):
    code = "shutting_down"


class InferenceFailed(ServiceError):
    status_code = 500
    code = "inference_error"


def error_response(status_code: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "code": code}, status_code=status_code, headers=headers)


def _describe_validation_errors(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        location = ".".join(str(item) for item in error.get("loc", ()) if item != "body")
        parts.append(f"{location}: {error.get('msg')}" if location else str(error.get("msg")))
    return "invalid request: " + "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error, expected or not, with the JSON error body and no internals."""

    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        request.state.error_code = exc.code
        return error_response(exc.status_code, exc.code, exc.message, exc.headers)

    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        request.state.error_code = code
        return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        request.state.error_code = UnprocessableInput.code
        return error_response(422, UnprocessableInput.code, _describe_validation_errors(exc))

    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        request.state.error_code = ServiceError.code
        return error_response(500, ServiceError.code, "internal server error")

    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected_error)
