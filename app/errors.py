"""Errors the service answers with, and the handlers that turn every failure into a JSON body.

Every error body is `{"error": "<message a user can act on>", "code": "<machine-readable kind>"}`;
the `error` string is also what the Open Inference Protocol v2 expects. A 500 names an error id, and the log
line with the same id (and the request id) has the cause: answers never show stack traces or host paths.
Refusals (4xx, 503) are logged at debug level only, so shedding load stays cheap.
"""

from __future__ import annotations

import logging
import os

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

logger = logging.getLogger(__name__)


def new_error_id() -> str:
    return os.urandom(8).hex()


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
    """No key, or a wrong one; `WWW-Authenticate` names the scheme (RFC 6750), and says when a key was wrong."""

    status_code = 401
    code = "unauthorized"

    def __init__(self, message: str, *, key_given: bool) -> None:
        challenge = 'Bearer realm="model-serving"' + (', error="invalid_token"' if key_given else "")
        super().__init__(message, headers={"WWW-Authenticate": challenge})


class Forbidden(ServiceError):
    status_code = 403
    code = "forbidden"


class ModelNotFound(ServiceError):
    status_code = 404
    code = "model_not_found"


class ModelLoadFailed(ServiceError):
    """A model asked to load (admin route) could not be served; the version already serving keeps serving."""

    status_code = 400
    code = "model_load_failed"


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


class Overloaded(Unavailable):
    """The request waited unread longer than `SERVE_OVERLOAD_WAIT_S`: the process is behind."""

    code = "overloaded"


class ClientDisconnected(ServiceError):
    """The client closed its connection while its request was queued, so the request was not run. Nobody reads
    the answer; the status (nginx's 499) is for `/metrics` and the logs."""

    status_code = 499
    code = "client_disconnected"


class InferenceFailed(ServiceError):
    """The model failed on a request's input: `message` is the answer, `cause` (ONNX Runtime's error) goes to
    the log only."""

    status_code = 500
    code = "inference_error"

    def __init__(self, message: str, *, cause: BaseException) -> None:
        super().__init__(message)
        self.cause = cause

    def __str__(self) -> str:
        return f"{self.message}: {type(self.cause).__name__}: {self.cause}"


def with_error_id(message: str, error_id: str) -> str:
    return f"{message} (error id {error_id}; the server log has the cause)"


def error_response(status_code: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "code": code}, status_code=status_code, headers=headers)


def _describe_validation_errors(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        location = ".".join(str(item) for item in error.get("loc", ()) if item != "body")
        parts.append(f"{location}: {error.get('msg')}" if location else str(error.get("msg")))
    return "invalid request: " + "; ".join(parts)


def unexpected_error_response(method: str, path: str, exc: Exception) -> JSONResponse:
    """The answer to an exception no handler took (a bug): a JSON 500 naming an error id, whose log line has
    the traceback. The `RequestId` middleware sends it, so the connection stays open for the next request."""
    error_id = new_error_id()
    logger.error("unhandled error on %s %s, error id %s", method, path, error_id, exc_info=exc,
                 extra={"error_id": error_id})
    return error_response(500, ServiceError.code, with_error_id("internal server error", error_id))


def _refusal(request: Request, status_code: int, code: str, message: str,
             headers: dict[str, str] | None = None) -> JSONResponse:
    """A 4xx or 503 answer, counted by kind (`RequestMetrics` reads `error_code`) and logged at debug level."""
    request.state.error_code = code
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("%s %s answered %d %s: %s", request.method, request.url.path, status_code, code, message)
    return error_response(status_code, code, message, headers)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every expected error with the JSON error body and no internals (unexpected ones: see above)."""

    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        if not isinstance(exc, InferenceFailed):
            return _refusal(request, exc.status_code, exc.code, exc.message, exc.headers)
        request.state.error_code = exc.code
        error_id = new_error_id()
        logger.error("%s %s failed, error id %s: %s", request.method, request.url.path, error_id, exc,
                     extra={"error_id": error_id})
        return error_response(exc.status_code, exc.code, with_error_id(exc.message, error_id), exc.headers)

    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _refusal(request, exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _refusal(request, 422, UnprocessableInput.code, _describe_validation_errors(exc))

    async def client_left(request: Request, exc: ClientDisconnect) -> JSONResponse:
        # The client left while the body was read (or the server cut it off, see app.transport.http.limits): nobody reads
        # this answer, which counts it as a 499 in /metrics, like a request dropped from a queue.
        return _refusal(request, ClientDisconnected.status_code, ClientDisconnected.code,
                        "the client closed the connection before the whole request was read")

    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(ClientDisconnect, client_left)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
