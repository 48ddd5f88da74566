"""The errors the service refuses or fails a request with, whatever the transport.

Each error has a machine-readable `code` and a `message` a user can act on; some carry a fact a transport
answers with (`retry_after` of the refusals a client may retry, `RETRYABLE`; `Unauthorized.key_given`).
None knows a status code: each transport maps them to its own (`app.transport.http.errors`,
`app.transport.grpc.errors`, each through `nearest_listed`). Errors pickle with their attributes, so the
inference process can send one back to a front-end worker as it was raised.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class ServiceError(Exception):
    """An error with the machine-readable code and message to answer with."""

    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (type(self), self.__dict__)


def _rebuild(cls: type[ServiceError], attributes: dict[str, Any]) -> ServiceError:
    error = cls.__new__(cls)
    Exception.__init__(error, attributes["message"])
    error.__dict__.update(attributes)
    return error


class InvalidInput(ServiceError):
    code = "invalid_input"


class UnprocessableInput(ServiceError):
    code = "invalid_request"


class Unauthorized(ServiceError):
    """No key, or a wrong one (`key_given` says which)."""

    code = "unauthorized"

    def __init__(self, message: str, *, key_given: bool) -> None:
        super().__init__(message)
        self.key_given = key_given


class Forbidden(ServiceError):
    code = "forbidden"


class RateLimited(ServiceError):
    """A key is over its rate or in-flight limit (app.dataplane.quotas); its client may retry after
    `retry_after_s` seconds. The server is not busy: that is `Unavailable`."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after_s))  # whole seconds, as `Unavailable.retry_after`


class ModelNotFound(ServiceError):
    code = "model_not_found"


class ModelLoadFailed(ServiceError):
    """A model asked to load (repository operation) could not be served; the version already serving keeps
    serving."""

    code = "model_load_failed"


class PayloadTooLarge(ServiceError):
    code = "payload_too_large"


class UnsupportedMediaType(ServiceError):
    code = "unsupported_media_type"


class Unavailable(ServiceError):
    """The service cannot take the request now; clients should retry after `retry_after` seconds."""

    code = "unavailable"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ModelNotReady(Unavailable):
    code = "model_not_ready"


class QueueFull(Unavailable):
    code = "queue_full"


class DeadlineExceeded(Unavailable):
    code = "deadline_exceeded"


class ShuttingDown(Unavailable):
    code = "shutting_down"


class IntakeStopped(ShuttingDown):
    """This server stopped taking requests (SIGTERM): the client's next request should go to another server."""


class Overloaded(Unavailable):
    """The request waited unread longer than `SERVE_OVERLOAD_WAIT_S`: the process is behind."""

    code = "overloaded"


class ClientDisconnected(ServiceError):
    """The client closed its connection while its request was queued, so the request was not run. Nobody reads
    the answer; it is counted and logged."""

    code = "client_disconnected"


class InferenceFailed(ServiceError):
    """The model failed on a request's input: `message` is the answer, `cause` (ONNX Runtime's error) goes to
    the log only."""

    code = "inference_error"

    def __init__(self, message: str, *, cause: BaseException) -> None:
        super().__init__(message)
        self.cause = cause

    def __str__(self) -> str:
        return f"{self.message}: {type(self.cause).__name__}: {self.cause}"


# The refusals a client may retry, each with `retry_after`: whole seconds to wait, at least 1 for a key's quota.
RETRYABLE = (Unavailable, RateLimited)


def nearest_listed(table: Mapping[type[ServiceError], T], exc: ServiceError) -> T:
    """The entry of `table` for `exc`'s class, or for its nearest listed ancestor (a transport's status map)."""
    for cls in type(exc).__mro__:
        if cls in table:
            return table[cls]  # type: ignore[index]  # cls is a ServiceError class here
    raise TypeError(f"{type(exc).__name__} is not a ServiceError")
