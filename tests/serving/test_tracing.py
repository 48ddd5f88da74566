"""OpenTelemetry tracing end to end: a real server exports its spans over OTLP/HTTP to a real receiver on
127.0.0.1 (tests/serving/otlp_receiver.py), and the tree the receiver gets is the one docs/monitoring.md
describes; with tracing off nothing is exported and the answers carry no `traceparent`."""

from __future__ import annotations

import json
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from .conftest import StartServer
from .otlp_receiver import OtlpReceiver, ReceivedSpan
from .support import Call, ModelUnderTest, exit_status, send_concurrently

REQUESTS = 24
SPAN_KIND_SERVER = 2  # opentelemetry.proto.trace.v1.Span.SpanKind


def _traced_calls(reviews: list[str]) -> list[tuple[str, str, Call]]:
    """One /predict call per request, each with its own W3C traceparent (sampled): (trace id, parent id, call)."""
    calls = []
    for number in range(REQUESTS):
        trace_id, parent_id = os.urandom(16).hex(), os.urandom(8).hex()
        headers = {"traceparent": f"00-{trace_id}-{parent_id}-01", "X-Request-ID": f"traced-{number}"}
        calls.append((trace_id, parent_id, Call({"json": {"text": reviews[number % len(reviews)]},
                                                 "headers": headers})))
    return calls


def _tracing_env(receiver: OtlpReceiver, workers: int, shared_inference: bool) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_TRACES_SAMPLER": "always_on",
        "OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_SERVICE_NAME": "traced-under-test",
        # A batching window, so that the concurrent requests share batches.
        "SERVE_MAX_BATCH_WAIT_MS": "30", "SERVE_LOG_FORMAT": "json", "SERVE_ACCESS_LOG": "true",
        "SERVE_WORKERS": str(workers), "SERVE_SHARED_INFERENCE": str(shared_inference).lower(),
    }


def _rows_run(spans: list[ReceivedSpan]) -> int:
    return sum(span.attributes["batch.rows"] for span in spans if span.name == "session.run")


@pytest.mark.parametrize(("workers", "shared_inference"), [(1, False), (2, False), (2, True)],
                         ids=["1-worker", "2-workers", "2-workers-shared-inference"])
def test_traced_requests_arrive_as_one_tree(start_server: StartServer, models_dir: Path, text_model: ModelUnderTest,
                                            reviews: list[str], workers: int, shared_inference: bool) -> None:
    with OtlpReceiver() as receiver:
        server = start_server(models_dir, SERVE_MODELS=text_model.name,
                              **_tracing_env(receiver, workers, shared_inference)).wait_ready()
        calls = _traced_calls(reviews)
        responses = send_concurrently(server.url, [call for _, _, call in calls], concurrency=REQUESTS)
        assert [response.status_code for response in responses] == [200] * REQUESTS, responses[0].text
        sent = {trace_id: parent_id for trace_id, parent_id, _ in calls}
        # Each process exports on its own: wait for every request's server span and a session.run of every row.
        spans = receiver.wait_for(lambda got: {s.trace_id for s in got if s.kind == SPAN_KIND_SERVER} >= set(sent)
                                  and _rows_run(got) >= REQUESTS, timeout=30)
        by_id = {span.span_id: span for span in spans}

        # Each request: its server span continues the client's trace, under the client's span, and the answer
        # names that server span in its own traceparent.
        servers = {}
        for (trace_id, parent_id, _), response in zip(calls, responses, strict=True):
            found = [s for s in spans if s.trace_id == trace_id and s.kind == SPAN_KIND_SERVER]
            assert len(found) == 1, "\n".join(map(repr, found))
            (server_span,) = found
            assert server_span.parent_span_id == parent_id, server_span
            assert server_span.name == "POST /predict" and server_span.attributes["http.route"] == "/predict"
            assert server_span.resource["service.name"] == "traced-under-test"
            assert response.headers["traceparent"] == f"00-{trace_id}-{server_span.span_id}-01", response.headers
            children = Counter(s.name for s in spans if s.parent_span_id == server_span.span_id)
            assert children["read"] == 1 and children["queue wait"] == 1 and children["answer"] == 1, children
            servers[(trace_id, server_span.span_id)] = server_span

        # The batches: a batch span links the requests it carried, and is linked back by their queue waits.
        batches = {s.span_id: s for s in spans if s.name == "batch"}
        front_batches = [s for s in batches.values() if set(s.links) & set(servers)]
        assert sum(len(batch.links) for batch in front_batches) == REQUESTS, front_batches
        assert max(len(batch.links) for batch in front_batches) >= 2, "no batch carried several requests"
        for batch in front_batches:
            assert set(batch.links) <= set(servers), batch
            assert (batch.trace_id, batch.parent_span_id) in servers, "a batch is a child of a request it carried"
            assert batch.attributes["model.name"] == text_model.name, batch.attributes
            assert batch.attributes["batch.rows"] == len(batch.links), batch.attributes
        for server_span in servers.values():
            (waited,) = [s for s in spans if s.name == "queue wait" and s.parent_span_id == server_span.span_id]
            ((_, batch_id),) = waited.links
            assert batch_id in batches, waited

        # session.run runs under a batch span (in the inference process with SERVE_SHARED_INFERENCE, under the
        # batch that links the front ends' `inference link` spans), with the model's attributes.
        runs = [s for s in spans if s.name == "session.run"]
        assert runs
        for run in runs:
            batch = batches[run.parent_span_id]
            assert run.trace_id == batch.trace_id
            assert run.attributes["model.name"] == text_model.name
            assert run.attributes["model.version"] == text_model.config.version
            assert run.attributes["batch.padded_length"] >= 1
            assert run.attributes["batch.rows"] == batch.attributes["batch.rows"]
            if shared_inference:
                assert run.resource["process.role"] == "inference"
                link_span = by_id[batch.parent_span_id]
                assert link_span.name == "inference link" and link_span.resource["process.role"] == "server"
                assert batches[link_span.parent_span_id] in front_batches
            else:
                assert batch in front_batches
        assert _rows_run(spans) == REQUESTS

        # The log lines about a request carry its trace: uvicorn's access line, with the request id beside it.
        lines = [json.loads(line) for line in server.log().splitlines() if line.startswith('{"level"')]
        access = {line["request_id"]: line for line in lines if line["logger"] == "uvicorn.access"}
        for number, (trace_id, _, _) in enumerate(calls):
            line = access[f"traced-{number}"]
            assert line["trace_id"] == trace_id, line
            assert (trace_id, line["span_id"]) in servers, line


def test_grpc_calls_continue_their_callers_traces(start_server: StartServer, models_dir: Path,
                                                 text_model: ModelUnderTest, reviews: list[str]) -> None:
    """ModelInfer over gRPC, concurrently, each with a traceparent in its metadata: the RPC's SERVER span (from
    OpenTelemetry's gRPC interceptor) under the caller's span, named in the trailing metadata, its queue wait
    and its batch with session.run."""
    with OtlpReceiver() as receiver:
        server = start_server(models_dir, SERVE_MODELS=text_model.name, grpc=True,
                              **_tracing_env(receiver, 1, False)).wait_ready()
        sent = {os.urandom(16).hex(): os.urandom(8).hex() for _ in range(REQUESTS)}

        def infer(number: int, trace_id: str, parent_id: str) -> dict[str, str]:
            request = service_pb2.ModelInferRequest(model_name=text_model.name)
            text = reviews[number % len(reviews)].encode()
            request.inputs.add(name="text", datatype="BYTES", shape=[1]).contents.bytes_contents.append(text)
            _, call = stub.ModelInfer.with_call(request, timeout=30,
                                                metadata=(("traceparent", f"00-{trace_id}-{parent_id}-01"),))
            return dict(call.trailing_metadata())

        with grpc.insecure_channel(server.grpc_url) as channel, ThreadPoolExecutor(REQUESTS) as pool:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            trailers = list(pool.map(infer, range(REQUESTS), sent, sent.values()))
            probe_trace = os.urandom(16).hex()  # a health check (Kubernetes' gRPC probe) is not traced
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10,
                                                      metadata=(("traceparent", f"00-{probe_trace}-{'1' * 16}-01"),))
        spans = receiver.wait_for(lambda got: {s.trace_id for s in got if s.kind == SPAN_KIND_SERVER} >= set(sent)
                                  and _rows_run(got) >= REQUESTS, timeout=30)

        batches = {span.span_id: span for span in spans if span.name == "batch"}
        for (trace_id, parent_id), trailer in zip(sent.items(), trailers, strict=True):
            (rpc,) = [s for s in spans if s.trace_id == trace_id and s.kind == SPAN_KIND_SERVER]
            assert rpc.parent_span_id == parent_id and rpc.attributes["rpc.method"] == "ModelInfer", rpc
            assert trailer["traceparent"] == f"00-{trace_id}-{rpc.span_id}-01", trailer
            (waited,) = [s for s in spans if s.name == "queue wait" and s.parent_span_id == rpc.span_id]
            ((_, batch_id),) = waited.links
            assert batches[batch_id].attributes["model.name"] == text_model.name
        assert max(len(batch.links) for batch in batches.values()) >= 2, "no batch carried several RPCs"
        assert all(batches[run.parent_span_id] for run in spans if run.name == "session.run")
        assert _rows_run(spans) == REQUESTS
        assert not [span for span in spans if span.trace_id == probe_trace]


def test_tracing_off_exports_nothing_and_answers_no_traceparent(start_server: StartServer, models_dir: Path,
                                                                 text_model: ModelUnderTest,
                                                                 reviews: list[str]) -> None:
    """`OTEL_TRACES_EXPORTER=none` keeps tracing off even with an endpoint set (as without any OTEL_ variable)."""
    with OtlpReceiver() as receiver:
        env = _tracing_env(receiver, 1, False) | {"OTEL_TRACES_EXPORTER": "none"}
        server = start_server(models_dir, SERVE_MODELS=text_model.name, **env).wait_ready()
        calls = _traced_calls(reviews)
        responses = send_concurrently(server.url, [call for _, _, call in calls], concurrency=REQUESTS)
        assert [response.status_code for response in responses] == [200] * REQUESTS
        assert not [response for response in responses if "traceparent" in response.headers]
        assert receiver.wait_for(bool, timeout=1.0) == []
        assert "trace_id" not in server.log() and "tracing on" not in server.log()


def test_unsampled_requests_export_nothing_but_answer_their_traceparent(start_server: StartServer, models_dir: Path,
                                                                        text_model: ModelUnderTest,
                                                                        reviews: list[str]) -> None:
    """A sampler that keeps nothing: no span, no batch span, but each answer names its trace, unsampled."""
    with OtlpReceiver() as receiver:
        env = _tracing_env(receiver, 1, False) | {"OTEL_TRACES_SAMPLER": "always_off"}
        server = start_server(models_dir, SERVE_MODELS=text_model.name, **env).wait_ready()
        calls = _traced_calls(reviews)
        responses = send_concurrently(server.url, [call for _, _, call in calls], concurrency=REQUESTS)
        assert [response.status_code for response in responses] == [200] * REQUESTS
        for (trace_id, parent_id, _), response in zip(calls, responses, strict=True):
            version, answered_trace, span_id, flags = response.headers["traceparent"].split("-")
            assert (version, answered_trace, flags) == ("00", trace_id, "00"), response.headers
            assert span_id != parent_id and int(span_id, 16) != 0
        assert receiver.wait_for(bool, timeout=1.0) == []


@pytest.mark.parametrize(("variable", "value"), [("OTEL_TRACES_EXPORTER", "zipkin"),
                                                 ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")])
def test_an_exporter_the_service_lacks_stops_it_at_start(tmp_path: Path, models_dir: Path, variable: str,
                                                         value: str) -> None:
    status, log = exit_status(models_dir, tmp_path, **{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
                                                      variable: value})
    assert status == 3, log
    assert f"{variable}={value!r}" in log, log
