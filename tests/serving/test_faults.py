"""Faults at inference: a model that fails on some inputs fails only those requests, with a 500 whose error id
is in the log line with the cause (and the request id), and the next batches run.

The faults come from a real ONNX model built for the test (`faulty_model.py`), not from a mock.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from .faulty_model import FAULTY, ORT_FAULT_AT, bright_digit, build_faulty_model, dim_digit
from .support import (
    Call,
    ModelUnderTest,
    ServerProcess,
    assert_json_error,
    assert_prediction,
    batches_larger_than_one,
    mnist_digits,
    png_bytes,
    scrape,
    send_concurrently,
    value,
)

ERROR_ID = re.compile(r"error id ([0-9a-f]{16})")


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory, image_model: ModelUnderTest) -> ModelUnderTest:
    root = build_faulty_model(tmp_path_factory.mktemp("faulty-models"), image_model)
    return ModelUnderTest.load(root, FAULTY)


@pytest.fixture(scope="module")
def mnist_pixels() -> list[np.ndarray]:
    return mnist_digits(64)


@pytest.fixture(scope="module")
def faulty_server(tmp_path_factory: pytest.TempPathFactory, faulty: ModelUnderTest) -> Iterator[ServerProcess]:
    process = ServerProcess(faulty.directory.parents[1], tmp_path_factory.mktemp("faulty-server"),
                            {"SERVE_MODELS": FAULTY})
    process.start().wait_ready()
    yield process
    process.stop()


def log_line_with(server: ServerProcess, text: str) -> str:
    lines = [line for line in server.log().splitlines() if text in line]
    assert len(lines) == 1, f"{len(lines)} log lines contain {text!r}:\n{server.log()}"
    return lines[0]


def assert_failure_logged(server: ServerProcess, response: httpx.Response, cause: str) -> None:
    """The 500's error id is in exactly one log line, with the request id and the cause."""
    error_id = ERROR_ID.search(response.json()["error"])
    assert error_id, response.json()
    line = log_line_with(server, error_id.group(1))
    request_id = response.headers["x-request-id"]
    assert f"[{request_id}]" in line, line
    assert cause in line, line


def test_inference_failure_fails_only_its_requests(faulty_server: ServerProcess, faulty: ModelUnderTest,
                                                   mnist_pixels: list[np.ndarray]) -> None:
    good = [dim_digit(pixels) for pixels in mnist_pixels[:48]]
    bad = [bright_digit(pixels) for pixels in mnist_pixels[48:64]]
    # Bad requests spread among the good ones, all sent at once, so batches mix them.
    images = [image for pair in zip(good[0::3], good[1::3], good[2::3], bad, strict=True) for image in pair]
    calls = [Call({"content": image, "headers": {"Content-Type": "image/png"}}) for image in images]
    with faulty_server.client() as client:
        before = scrape(client)
        responses = send_concurrently(faulty_server.url, calls, concurrency=32)
        after = scrape(client)

        for image, response in zip(images, responses, strict=True):
            if image in bad:
                assert_json_error(response, 500, "inference_error")
                assert_failure_logged(faulty_server, response, "indices element out of data bounds")
            else:
                assert response.status_code == 200, response.text
                expected = faulty.image_probabilities(image)[:len(faulty.labels)]
                assert_prediction(response.json(), expected, faulty.labels, 5)
        assert batches_larger_than_one(after, FAULTY) > batches_larger_than_one(before, FAULTY)
        grew = value(after, "modelserver_errors_total", model=FAULTY, kind="inference_error") - value(
            before, "modelserver_errors_total", model=FAULTY, kind="inference_error")
        assert grew == len(bad)
        error_ids = {ERROR_ID.search(response.json()["error"]).group(1) for response in responses
                     if response.status_code == 500}
        assert len(error_ids) == len(bad)

        # The next batches run, one at a time and together.
        assert client.get("/health/ready").status_code == 200
        for image in good[:4]:
            response = client.post("/predict", content=image, headers={"Content-Type": "image/png"})
            assert response.status_code == 200, response.text
        again = send_concurrently(faulty_server.url, calls[0::4] * 4, concurrency=16)
        assert all(response.status_code == 200 for response in again), [r.text for r in again]


def test_inference_failure_over_v2(faulty_server: ServerProcess, faulty: ModelUnderTest) -> None:
    rng = np.random.default_rng(3)
    tensors = rng.uniform(-0.4, 2.0, (4, 1, 28, 28)).astype(np.float32)
    tensors[2, 0, 3, 3] = ORT_FAULT_AT + 1

    def infer(batch: np.ndarray) -> httpx.Response:
        body = {"inputs": [{"name": "pixel_values", "shape": list(batch.shape), "datatype": "FP32",
                            "data": batch.ravel().tolist()}]}
        with faulty_server.client() as client:
            return client.post(f"/v2/models/{FAULTY}/infer", json=body)

    failed = infer(tensors)  # one request with a bad row fails as a whole
    assert_json_error(failed, 500, "inference_error")
    assert_failure_logged(faulty_server, failed, "indices element out of data bounds")
    answered = infer(np.delete(tensors, 2, axis=0))
    assert answered.status_code == 200, answered.text
    logits = np.asarray(answered.json()["outputs"][0]["data"], np.float32).reshape(3, -1)
    expected = faulty.run({"pixel_values": np.delete(tensors, 2, axis=0)})
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-4)


def test_unexpected_error_is_a_plain_500(faulty_server: ServerProcess, faulty: ModelUnderTest,
                                         mnist_pixels: list[np.ndarray]) -> None:
    """An error that is no ONNX Runtime failure (here: an output the server cannot label) is still a JSON 500
    with the request id, an error id, and no stack trace or path; the log has the traceback."""
    gray = png_bytes(np.full((28, 28), 180, np.uint8))
    with faulty_server.client() as client:
        before = scrape(client)
        response = client.post("/predict", content=gray, headers={"Content-Type": "image/png",
                                                                    "X-Request-ID": "client-id-1"})
        after = scrape(client)
        assert_json_error(response, 500, "internal_error")
        assert response.headers["x-request-id"] == "client-id-1"
        assert_failure_logged(faulty_server, response, "unhandled error on POST /predict")
        assert "IndexError" in faulty_server.log()
        assert value(after, "modelserver_errors_total", model=FAULTY, kind="internal_error") - value(
            before, "modelserver_errors_total", model=FAULTY, kind="internal_error") == 1
        assert value(after, "modelserver_requests_total", protocol="http", route="/predict", model=FAULTY, status="500") - value(
            before, "modelserver_requests_total", protocol="http", route="/predict", model=FAULTY, status="500") == 1
        image = dim_digit(mnist_pixels[0])
        response = client.post("/predict", content=image, headers={"Content-Type": "image/png"})
        assert response.status_code == 200, response.text
        assert_prediction(response.json(), faulty.image_probabilities(image)[:len(faulty.labels)], faulty.labels, 5)
