"""OpenTelemetry tracing, configured by the standard `OTEL_*` environment variables and off unless they ask for it.

`configure_tracing()` runs once in each server process (each worker, the inference process) and turns tracing on
when `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, or `OTEL_TRACES_EXPORTER`
names an exporter other than `none` (`otlp` or `console`), unless `OTEL_SDK_DISABLED=true`. The OTLP exporter
speaks `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` or `OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf` (the default, as
the specification says) or `grpc`. The SDK itself reads the rest: the sampler (`OTEL_TRACES_SAMPLER`,
`OTEL_TRACES_SAMPLER_ARG`), the resource (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`), the exporter's
endpoint, headers and timeout, the batch processor's delays and the propagators (`OTEL_PROPAGATORS`).
`shutdown_tracing()` exports what is left, as the process stops.

The contract of the helpers below, which the request path calls: with tracing off each is one check of a module
flag, and makes no span object. With it on, a span is made only under a recording (sampled) span, so an
unsampled request costs its server span (a non-recording one) and these checks:
- `span(name)`: a child of the current span; `recording_span()`: the current span, when it records;
- `request_trace()`: the current span's context and the time a request was queued, carried with the request to
  its batch (None when off or unsampled);
- `batch_span(...)`: the span of a batch, parented to its first sampled request, linked to all of them, and one
  `queue wait` span per request, in that request's trace, from queueing to the batch start, linked to the batch;
- `link_carrier()` / `linked_context(carrier)`: the current span's context over the inference link, as W3C
  `traceparent`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

logger = logging.getLogger(__name__)

DEFAULT_SERVICE_NAME = "onnx-classifier-serving"
EXPORTERS = ("otlp", "console")
PROTOCOLS = ("http/protobuf", "grpc")

_on = False
_tracer: trace.Tracer = trace.NoOpTracer()
_provider: TracerProvider | None = None
NOT_TRACED: AbstractContextManager[None] = nullcontext()
_W3C = TraceContextTextMapPropagator()


class TracingMisconfigured(ValueError):
    """The `OTEL_*` variables ask for tracing this service cannot do (an unknown exporter or protocol)."""


def wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment turns tracing on (module docstring)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def exporter_choice(environ: Mapping[str, str] = os.environ) -> str:
    """The exporter the environment names: `console`, or OTLP's protocol (`http/protobuf` or `grpc`);
    `TracingMisconfigured` for one this service does not have."""
    name = environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    if name not in EXPORTERS:
        raise TracingMisconfigured(f"OTEL_TRACES_EXPORTER={name!r}: this service exports traces with "
                                   f"{', '.join(EXPORTERS)} or none")
    if name == "console":
        return name
    protocol = (environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf").strip().lower()
    if protocol not in PROTOCOLS:
        raise TracingMisconfigured(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: this service exports OTLP over "
                                   f"{' or '.join(PROTOCOLS)}")
    return protocol


def make_exporter(choice: str) -> SpanExporter:
    """The exporter of `exporter_choice()`; it reads its endpoint, headers and timeout from the environment."""
    if choice == "console":
        return ConsoleSpanExporter()
    if choice == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter()


def service_resource() -> Resource:
    """The resource the SDK reads from OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, named after this service
    when they name none."""
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    return resource


def configure_tracing(process: str) -> bool:
    """Turn tracing on in this process when the environment asks for it; whether it did. `process` names the
    process in its spans' resource (`process.role`: server or inference). Raises `TracingMisconfigured`."""
    global _on, _tracer, _provider
    if not wanted():
        return False
    choice = exporter_choice()
    provider = TracerProvider(resource=service_resource().merge(Resource({"process.role": process})))
    provider.add_span_processor(BatchSpanProcessor(make_exporter(choice)))
    trace.set_tracer_provider(provider)
    _provider, _tracer, _on = provider, provider.get_tracer("app"), True
    logger.info("tracing on: spans exported %s, sampler %s",
                "to the console" if choice == "console" else f"by OTLP over {choice}",
                provider.sampler.get_description())
    return True


def shutdown_tracing() -> None:
    """Export the spans still buffered and stop the exporter (at the end of the process)."""
    global _on
    if _provider is not None:
        _on = False
        _provider.shutdown()


def on() -> bool:
    return _on


def tracer() -> trace.Tracer:
    """The service's tracer (a no-op one while tracing is off)."""
    return _tracer


def traceparent(span_context: SpanContext) -> str:
    """The W3C `traceparent` header naming `span_context`."""
    return f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{int(span_context.trace_flags):02x}"


def current_traceparent() -> str | None:
    """The current span's `traceparent`, to answer with; None when tracing is off or no span is current."""
    if not _on:
        return None
    span_context = trace.get_current_span().get_span_context()
    return traceparent(span_context) if span_context.is_valid else None


# Spans of the request path ------------------------------------------------------------------------------


def span(name: str, attributes: Mapping[str, Any] | None = None) -> AbstractContextManager[Span | None]:
    """A span under the current one while the block runs, when that one records; else nothing (None)."""
    if not _on or not trace.get_current_span().is_recording():
        return NOT_TRACED
    return _tracer.start_as_current_span(name, attributes=attributes)


def recording_span() -> Span | None:
    """The current span when tracing is on and it records; else None."""
    if not _on:
        return None
    current = trace.get_current_span()
    return current if current.is_recording() else None


@dataclass(frozen=True, slots=True)
class RequestTrace:
    """A sampled request's span context, and when (`time.time_ns()`) it was queued for its batch."""

    context: SpanContext
    queued_at_ns: int


def request_trace() -> RequestTrace | None:
    """The current span's context for the batch to link, when it is sampled; None when off or unsampled."""
    if not _on:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.trace_flags.sampled:
        return None
    return RequestTrace(context, time.time_ns())


@contextmanager
def batch_span(traces: Sequence[RequestTrace], attributes: Mapping[str, Any]) -> Iterator[Span]:
    """The current span while a batch of the sampled requests `traces` (at least one) runs: a child of the
    first, linked to all; each request gets its `queue wait` span, linked to the batch."""
    parent = trace.set_span_in_context(NonRecordingSpan(traces[0].context))
    started = time.time_ns()
    batch = _tracer.start_span("batch", context=parent, links=[Link(item.context) for item in traces],
                               attributes=attributes, start_time=started)
    to_batch = [Link(batch.get_span_context())]
    for item in traces:
        waited = _tracer.start_span("queue wait", context=trace.set_span_in_context(NonRecordingSpan(item.context)),
                                    links=to_batch, start_time=item.queued_at_ns)
        waited.end(end_time=started)
    with trace.use_span(batch, end_on_exit=True):
        yield batch


# The inference link --------------------------------------------------------------------------------------


def link_carrier() -> dict[str, str] | None:
    """The current span's context as a W3C carrier for the inference link; None when off or not recording."""
    if not _on or not trace.get_current_span().is_recording():
        return None
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier


@contextmanager
def linked_context(carrier: dict[str, str] | None) -> Iterator[None]:
    """The context a front end sent over the inference link, current while the block runs."""
    if carrier is None or not _on:
        yield
        return
    token = otel_context.attach(_W3C.extract(carrier))
    try:
        yield
    finally:
        otel_context.detach(token)
