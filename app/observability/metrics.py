"""Prometheus metrics of one service instance, kept in their own registry.

With several worker processes (`SERVE_WORKERS`), prometheus-client's multiprocess mode keeps every value in
files in the shared directory (`app.topology.workers`), and `exposition` reads them all: counters and histograms add up
over the workers, each gauge combines as its `multiprocess_mode` says, and `process_*` sums the workers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    multiprocess,
)

from app.intake_load import IntakeLoad
from app.observability.process_metrics import ProcessesCollector
from app.observability.quality import QualityMetrics

# `*_created` series double the output and no dashboard uses them.
disable_created_metrics()

NAMESPACE = "modelserver"

# Seconds, from sub-millisecond CPU inference up to the default request deadline.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class SharedProcesses(Protocol):
    """The worker processes whose metrics add up (app.topology.workers.WorkerBoard)."""

    directory: Path  # prometheus-client's multiprocess files

    def pids(self) -> list[int]: ...


class Metrics:
    """All metrics the service exports at /metrics. They observe the service; nothing reads them back to decide."""

    def __init__(self, workers: SharedProcesses | None = None) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.shared = workers is not None
        if workers is None:
            # CPU, memory and open file descriptors of the process (`process_*`), the Python version and GC.
            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                registry.register(collector)
            self.exposition = registry
        else:  # the values live in the shared files; this registry only names the metrics
            self.exposition = CollectorRegistry()
            multiprocess.MultiProcessCollector(self.exposition, path=str(workers.directory))
            for collector in (PLATFORM_COLLECTOR, ProcessesCollector(workers.pids)):
                self.exposition.register(collector)
        # `protocol` is http or grpc; `route` the route template or the gRPC method; `status` the HTTP status code
        # or the gRPC status code's name (OK, UNAVAILABLE, ...).
        self.requests = Counter(
            "requests", "Requests by protocol, route or gRPC method, model and status.",
            ["protocol", "route", "model", "status"], namespace=NAMESPACE, registry=registry,
        )
        self.request_duration = Histogram(
            "request_duration_seconds", "End-to-end request latency, HTTP or gRPC.",
            ["protocol", "route", "model"], buckets=LATENCY_BUCKETS, namespace=NAMESPACE, registry=registry,
        )
        # Requests being handled, HTTP and gRPC (app.intake_load): see `follow_in_flight`.
        self.in_flight = Gauge(
            "requests_in_flight", "Requests being handled, HTTP and gRPC.", namespace=NAMESPACE, registry=registry,
            multiprocess_mode="livesum",
        )
        self.read_delay = Histogram(
            "request_read_delay_seconds",
            "Time a request waited unread, in the kernel's accept queue and socket buffer, before the server "
            "read it: beyond a few milliseconds the process is behind (see SERVE_OVERLOAD_WAIT_S).",
            buckets=LATENCY_BUCKETS, namespace=NAMESPACE, registry=registry,
        )
        self.errors = Counter(
            "errors", "Error answers by model and kind (the `code` of the error body).",
            ["model", "kind"], namespace=NAMESPACE, registry=registry,
        )
        # By API key id (never the key), bounded by the keys configured: the requests to a model (/predict and v2
        # infer, REST or gRPC) with each key, key="" when they needed none, and those refused by the key's quotas.
        self.key_requests = Counter(
            "key_requests", "Model requests (/predict, v2 infer; REST or gRPC) by API key id and model; key=\"\" "
            "when no key was needed.", ["key", "model"], namespace=NAMESPACE, registry=registry,
        )
        self.key_refusals = Counter(
            "key_refusals", "Model requests refused with 429 rate_limited (gRPC: RESOURCE_EXHAUSTED), the key "
            "over its rate or in-flight limit, by API key id and model.", ["key", "model"], namespace=NAMESPACE, registry=registry,
        )
        self.queue_wait = Histogram(
            "queue_wait_seconds", "Time a request waited in its model's queue before its batch started.",
            ["model"], buckets=LATENCY_BUCKETS, namespace=NAMESPACE, registry=registry,
        )
        self.preprocess_duration = Histogram(
            "preprocess_duration_seconds", "Preprocessing time per batch (decoding, resizing, tokenizing, padding).",
            ["model"], buckets=LATENCY_BUCKETS, namespace=NAMESPACE, registry=registry,
        )
        self.inference_duration = Histogram(
            "inference_duration_seconds", "ONNX Runtime session.run time per batch.",
            ["model"], buckets=LATENCY_BUCKETS, namespace=NAMESPACE, registry=registry,
        )
        self.batch_size = Histogram(
            "batch_size", "Rows (images or texts) per session.run.",
            ["model"], buckets=BATCH_SIZE_BUCKETS, namespace=NAMESPACE, registry=registry,
        )
        self.queue_depth = Gauge(
            "queue_depth", "Requests waiting in the model's queue.", ["model"], namespace=NAMESPACE, registry=registry,
            multiprocess_mode="livesum",
        )
        self.queue_capacity = Gauge(
            "queue_capacity", "Requests the model's queue holds before answering 503 (SERVE_MAX_QUEUE_SIZE).",
            ["model"], namespace=NAMESPACE, registry=registry, multiprocess_mode="livesum",
        )
        self.max_batch_size = Gauge(
            "max_batch_size", "Largest batch the model forms: the measured best size, or the configured maximum.",
            ["model"], namespace=NAMESPACE, registry=registry, multiprocess_mode="livemax",
        )
        self.model_info = Gauge(
            "model_info", "Loaded model versions and the execution provider each session really got.",
            ["model", "version", "task", "provider"], namespace=NAMESPACE, registry=registry,
            multiprocess_mode="livemax",
        )
        self.model_ready = Gauge(
            "model_ready", "1 when the model is loaded and warmed up (in every worker).", ["model"],
            namespace=NAMESPACE, registry=registry, multiprocess_mode="livemin",
        )
        # What the models answer, against their reference profiles (model-quality monitoring).
        self.quality = QualityMetrics(registry)

    def follow_in_flight(self, intake: IntakeLoad) -> None:
        """Make `requests_in_flight` read the intake's count as it is scraped. With several workers each worker
        writes its count into the shared files instead, on every change (app.transport.http.middleware), and
        /metrics adds them up."""
        if not self.shared:
            self.in_flight.set_function(lambda: intake.in_flight)
