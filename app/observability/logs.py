"""Logging: plain text for a terminal, or one JSON object per line for a log pipeline (`SERVE_LOG_FORMAT`).

Every record logged while a request is handled carries that request's id (`request_id`, the id answered in
`X-Request-ID`): `RequestId` middleware sets it in a context variable, which each request's own asyncio task
keeps, and a handler filter copies it onto the record. Records from outside a request (start-up, the
batchers' worker threads) have none. With tracing on (app.observability.tracing), a record logged while a span
is current also carries its `trace_id` and `span_id` (hex, as W3C `traceparent` writes them): a JSON line has
them as fields, a text line after the request id.
"""

from __future__ import annotations

import logging
import logging.config
import os
import re
from contextvars import ContextVar
from typing import Any, Literal

import onnxruntime as ort
from opentelemetry import trace
from pythonjsonlogger.core import RESERVED_ATTRS

from app.observability import tracing

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
# A client's request id is kept when it is this plain and short; anything else (which could forge log lines or
# bloat them) is replaced by a new one.
USABLE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:+/=@-]{1,128}")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]%(trace)s: %(message)s"
JSON_FIELDS = "%(levelname)s %(name)s %(message)s"
# uvicorn adds an ANSI-coloured copy of some messages; a JSON line keeps the plain one.
JSON_LEFT_OUT = ("color_message",)
ORT_FATAL = 4  # ONNX Runtime's logging severity: 0 verbose ... 3 error, 4 fatal


def request_id_for(given: bytes | None) -> bytes:
    """The id of a request whose client sent `given` (None: none): `given` when usable, else 32 random hex
    digits. Every transport answers it (HTTP: `X-Request-ID`; gRPC: `x-request-id` trailing metadata)."""
    return given if given is not None and USABLE_REQUEST_ID.fullmatch(given) else os.urandom(16).hex().encode()


def new_error_id() -> str:
    """The id an answer to a failure names, and its log line (with the cause) carries."""
    return os.urandom(8).hex()


def with_error_id(message: str, error_id: str) -> str:
    return f"{message} (error id {error_id}; the server log has the cause)"


class RequestIdFilter(logging.Filter):
    """Tags each record with the id of the request being handled, and with the current span's trace and span
    ids when tracing is on; JSON lines leave the fields out where there is none."""

    def __init__(self, text: bool = False) -> None:
        super().__init__()
        self.text = text  # the text format writes the trace ids in one field, `trace`

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = REQUEST_ID.get()
        if request_id is not None:
            record.request_id = request_id
        if tracing.on():
            span_context = trace.get_current_span().get_span_context()
            if span_context.is_valid:
                record.trace_id = f"{span_context.trace_id:032x}"
                record.span_id = f"{span_context.span_id:016x}"
                if self.text:
                    record.trace = f" [trace {record.trace_id} span {record.span_id}]"
        return True


def logging_config(level: str, log_format: Literal["text", "json"]) -> dict[str, Any]:
    """A `logging.config.dictConfig` document: one stderr handler on the root logger, which uvicorn's and the
    service's loggers propagate to."""
    if log_format == "json":
        formatter: dict[str, Any] = {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": JSON_FIELDS,
            "timestamp": "time",
            "rename_fields": {"levelname": "level", "name": "logger"},
            "reserved_attrs": [*RESERVED_ATTRS, *JSON_LEFT_OUT],
        }
    else:
        formatter = {"()": "logging.Formatter", "fmt": TEXT_FORMAT, "defaults": {"request_id": "-", "trace": ""}}
    return {
        "version": 1,
        "disable_existing_loggers": False,  # the service's modules made their loggers on import
        "filters": {"request_id": {"()": RequestIdFilter, "text": log_format == "text"}},
        "formatters": {"default": formatter},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "default", "filters": ["request_id"]},
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
    }


def configure_logging(level: str, log_format: Literal["text", "json"]) -> None:
    """Send every log record through one handler in the chosen format.

    ONNX Runtime writes its own plain-text lines to stderr; with JSON logs only its fatal ones are kept, since
    every inference failure it would report reaches the service's log, with the cause, as a JSON line.
    """
    logging.config.dictConfig(logging_config(level, log_format))
    if log_format == "json":
        ort.set_default_logger_severity(ORT_FATAL)
