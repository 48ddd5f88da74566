"""/metrics: the Prometheus series exist and count what really happened."""

from __future__ import annotations

import httpx
import pytest

from app.settings import Settings

from .conftest import MAX_BODY_BYTES, SHARED_SERVER_WORKERS
from .support import (
    ModelUnderTest,
    ServerProcess,
    assert_json_error,
    b64,
    has_series,
    raw_http,
    scrape,
    value,
)

HISTOGRAMS = (
    "modelserver_queue_wait_seconds",
    "modelserver_inference_duration_seconds",
    "modelserver_preprocess_duration_seconds",
    "modelserver_batch_size",
)


def test_predictions_are_counted(http: httpx.Client, image_model: ModelUnderTest, digits: list[bytes]) -> None:
    count = 7
    model = image_model.name
    before = scrape(http)
    for digit in digits[100:100 + count]:
        assert http.post("/predict", json={"image": b64(digit)}).status_code == 200

    after = scrape(http)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("modelserver_requests_total", protocol="http", route="/predict", model=model, status="200") == count
    assert grew("modelserver_request_duration_seconds_count", protocol="http", route="/predict", model=model) == count
    assert grew("modelserver_key_requests_total", key="", model=model) == count  # no key configured: key=""
    assert grew("modelserver_queue_wait_seconds_count", model=model) == count
    assert grew("modelserver_batch_size_sum", model=model) == count  # one row per request
    batches = grew("modelserver_batch_size_count", model=model)
    assert 1 <= batches <= count
    assert grew("modelserver_inference_duration_seconds_count", model=model) == batches
    assert grew("modelserver_preprocess_duration_seconds_count", model=model) == batches
    assert grew("modelserver_errors_total", model=model, kind="invalid_input") == 0


@pytest.mark.parametrize("model_fixture", ["image_model", "text_model"])
def test_series_exist_for_each_model(http: httpx.Client, request: pytest.FixtureRequest, digits: list[bytes],
                                     model_fixture: str) -> None:
    model: ModelUnderTest = request.getfixturevalue(model_fixture)
    body = {"image": b64(digits[0])} if model.config.task == "image" else {"text": "a fine, funny film"}
    assert http.post("/predict", json=body).status_code == 200
    samples = scrape(http)
    assert has_series(samples, "modelserver_request_duration_seconds_bucket", protocol="http", route="/predict", model=model.name,
                      le="+Inf")
    assert value(samples, "modelserver_request_duration_seconds_count", protocol="http", route="/predict", model=model.name) > 0
    for name in HISTOGRAMS:
        assert has_series(samples, f"{name}_bucket", model=model.name, le="+Inf"), name
        assert value(samples, f"{name}_count", model=model.name) > 0, name
    info = value(samples, "modelserver_model_info", model=model.name, version=str(model.config.version),
                 task=model.config.task, provider="CPUExecutionProvider")
    assert info == 1
    assert value(samples, "modelserver_model_ready", model=model.name) == 1
    assert has_series(samples, "modelserver_queue_depth", model=model.name)
    capacity = Settings.model_fields["max_queue_size"].default * SHARED_SERVER_WORKERS  # a queue per worker
    assert value(samples, "modelserver_queue_capacity", model=model.name) == capacity
    assert has_series(samples, "modelserver_requests_in_flight")
    # The process row of the dashboard: CPU, memory, file descriptors.
    assert value(samples, "process_resident_memory_bytes") > 0
    assert value(samples, "process_open_fds") > 0
    assert has_series(samples, "process_cpu_seconds_total")


def test_errors_are_counted_by_kind(http: httpx.Client, image_model: ModelUnderTest) -> None:
    model = image_model.name
    before = scrape(http)
    for _ in range(2):
        response = http.post("/predict", content=b"not an image", headers={"Content-Type": "image/png"})
        assert_json_error(response, 400, "invalid_input")
    assert_json_error(http.post("/predict", json={"text": "fine", "model": "no-such-model"}), 404, "model_not_found")
    assert_json_error(http.post("/predict", content=b"hello", headers={"Content-Type": "text/plain"}), 415)
    after = scrape(http)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("modelserver_errors_total", model=model, kind="invalid_input") == 2
    assert grew("modelserver_requests_total", protocol="http", route="/predict", model=model, status="400") == 2
    assert grew("modelserver_errors_total", model="", kind="model_not_found") == 1
    assert grew("modelserver_errors_total", model="", kind="unsupported_media_type") == 1
    assert grew("modelserver_requests_total", protocol="http", route="/predict", model="", status="415") == 1


def test_oversized_body_is_counted_for_its_route(server: ServerProcess, http: httpx.Client) -> None:
    """A 413 for an over-long declared body is a /predict request, and is counted as one."""
    head = (b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (MAX_BODY_BYTES + 1))
    before = scrape(http)
    assert_json_error(raw_http(server.port, head), 413, "payload_too_large")
    after = scrape(http)
    assert value(after, "modelserver_errors_total", model="", kind="payload_too_large") - value(
        before, "modelserver_errors_total", model="", kind="payload_too_large") == 1
    counted = {(dict(labels)["route"], dict(labels)["model"]): count - before.get((name, labels), 0.0)
               for (name, labels), count in after.items()
               if name == "modelserver_requests_total" and dict(labels)["status"] == "413"}
    assert {series: count for series, count in counted.items() if count} == {("/predict", ""): 1}
