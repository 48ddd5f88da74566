"""The gRPC answer to every failure: each `app.errors` error's status code, details and trailing metadata.

The details are the error's message (what REST answers in `error`); the trailing metadata carry its
machine-readable `code` (`x-error-code`) and, for a refusal to retry, `retry-after` in whole seconds (REST's
`Retry-After`). A key over its quota is RESOURCE_EXHAUSTED; a server that cannot take the request now is
UNAVAILABLE. An inference failure names an error id, as over REST, and the log line with that id has the
cause.
"""

from __future__ import annotations

import grpc

from app.errors import (
    RETRYABLE,
    ClientDisconnected,
    DeadlineExceeded,
    Forbidden,
    InferenceFailed,
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

ERROR_CODE_KEY = "x-error-code"
RETRY_AFTER_KEY = "retry-after"

# The status of each error class; a subclass answers with its nearest listed ancestor's.
STATUS_CODES: dict[type[ServiceError], grpc.StatusCode] = {
    ServiceError: grpc.StatusCode.INTERNAL,
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    UnprocessableInput: grpc.StatusCode.INVALID_ARGUMENT,
    UnsupportedMediaType: grpc.StatusCode.INVALID_ARGUMENT,
    Unauthorized: grpc.StatusCode.UNAUTHENTICATED,
    Forbidden: grpc.StatusCode.PERMISSION_DENIED,
    ModelNotFound: grpc.StatusCode.NOT_FOUND,
    ModelLoadFailed: grpc.StatusCode.FAILED_PRECONDITION,
    # What gRPC answers a message over grpc.max_receive_message_length with, too.
    PayloadTooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    RateLimited: grpc.StatusCode.RESOURCE_EXHAUSTED,  # the key's quota: retry after its hint
    Unavailable: grpc.StatusCode.UNAVAILABLE,  # not ready, queue full, shutting down: retry after a while
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    ClientDisconnected: grpc.StatusCode.CANCELLED,
    InferenceFailed: grpc.StatusCode.INTERNAL,
}


def status_code_for(exc: ServiceError) -> grpc.StatusCode:
    return nearest_listed(STATUS_CODES, exc)


def trailers_for(exc: ServiceError) -> list[tuple[str, str]]:
    trailers = [(ERROR_CODE_KEY, exc.code)]
    if isinstance(exc, RETRYABLE):
        trailers.append((RETRY_AFTER_KEY, str(exc.retry_after)))
    return trailers
