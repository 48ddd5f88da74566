"""The HTTP answer to every failure: each `app.errors` error's status code, headers and JSON body, and the
FastAPI exception handlers that send them.

Every error body is `{"error": "<message a user can act on>", "code": "<machine-readable kind>"}`;
the `error` string is also what the Open Inference Protocol v2 expects. A 500 names an error id, and the log
line with the same id (and the request id) has the cause: answers never show stack traces or host paths.
Refusals (4xx, 503; 429 for a key over its quota) are logged at debug level only, so shedding load stays cheap.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from app.errors import (
    RETRYABLE,
    ClientDisconnected,
    Forbidden,
    InferenceFailed,
    IntakeStopped,
    InvalidInput,
    ModelLoadFailed,
    ModelNotFound,
    PayloadTooLarge,
    RateLimited,
    ServiceError,
    Unauthorized,
    Unavailable,
    UnprocessableInput,
    UnsupportedMediaType,
    nearest_listed,
)
from app.observability.logs import new_error_id, with_error_id

logger = logging.getLogger(__name__)

# The status of each error class; a subclass answers with its nearest listed ancestor's.
STATUS_CODES: dict[type[ServiceError], int] = {
    ServiceError: 500,
    InvalidInput: 400,
    UnprocessableInput: 422,
    Unauthorized: 401,
    Forbidden: 403,
    ModelNotFound: 404,
    ModelLoadFailed: 400,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    RateLimited: 429,
    Unavailable: 503,
    ClientDisconnected: 499,  # nginx's: nobody reads the answer; the status is for /metrics and the logs
    InferenceFailed: 500,
}


def status_code_for(exc: ServiceError) -> int:
    return nearest_listed(STATUS_CODES, exc)


def headers_for(exc: ServiceError) -> dict[str, str] | None:
    """`Retry-After` for a refusal to retry (with `Connection: close` from a server that stopped its intake, so
    that the client's next request opens a new connection, to another server; in whole seconds, at least 1,
    for a key over its limit), and the `WWW-Authenticate`
    challenge of RFC 6750 (which says when a key was wrong) for a missing or wrong key."""
    if isinstance(exc, IntakeStopped):
        return {"Retry-After": str(exc.retry_after), "Connection": "close"}
    if isinstance(exc, RETRYABLE):
        return {"Retry-After": str(exc.retry_after)}
    if isinstance(exc, Unauthorized):
        return {"WWW-Authenticate": 'Bearer realm="model-serving"' + (', error="invalid_token"' if exc.key_given else "")}
    return None


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
            return _refusal(request, status_code_for(exc), exc.code, exc.message, headers_for(exc))
        request.state.error_code = exc.code
        error_id = new_error_id()
        logger.error("%s %s failed, error id %s: %s", request.method, request.url.path, error_id, exc,
                     extra={"error_id": error_id})
        return error_response(STATUS_CODES[InferenceFailed], exc.code, with_error_id(exc.message, error_id))

    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _refusal(request, exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _refusal(request, STATUS_CODES[UnprocessableInput], UnprocessableInput.code,
                        _describe_validation_errors(exc))

    async def client_left(request: Request, exc: ClientDisconnect) -> JSONResponse:
        # The client left while the body was read (or the server cut it off, see app.transport.http.limits): nobody
        # reads this answer, which counts it as a 499 in /metrics, like a request dropped from a queue.
        return _refusal(request, STATUS_CODES[ClientDisconnected], ClientDisconnected.code,
                        "the client closed the connection before the whole request was read")

    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(ClientDisconnect, client_left)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
