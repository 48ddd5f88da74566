"""Under concurrent load the dynamic batcher forms real batches, and every answer is still its own."""

from __future__ import annotations

from pathlib import Path

import httpx

from .conftest import CopyModels, StartServer
from .support import (
    Call,
    ModelUnderTest,
    ServerProcess,
    assert_json_error,
    assert_prediction,
    b64,
    batches_larger_than_one,
    edit_config,
    scrape,
    send_concurrently,
    value,
)

TOP_K = 3


def _image_call(digit: bytes, index: int) -> Call:
    """Vary how the image is sent, so every input path goes through the batcher under load."""
    if index % 3 == 0:
        return Call({"files": {"file": (f"{index}.png", digit, "image/png")}, "params": {"top_k": TOP_K}})
    if index % 3 == 1:
        return Call({"content": digit, "headers": {"Content-Type": "image/png"}, "params": {"top_k": TOP_K}})
    return Call({"json": {"image": b64(digit), "top_k": TOP_K}})


def test_concurrent_requests_are_batched_and_answered_right(
    server: ServerProcess, http: httpx.Client, image_model: ModelUnderTest, text_model: ModelUnderTest,
    digits: list[bytes], reviews: list[str],
) -> None:
    images = digits[:128]
    # 64 distinct texts: every ordered pair of distinct reviews joined, taken in turn.
    texts = [f"{first} {second}" for first in reviews for second in reviews if first != second][:64]
    calls = [_image_call(digit, index) for index, digit in enumerate(images)]
    calls += [Call({"json": {"text": text, "top_k": TOP_K}}) for text in texts]
    before = scrape(http)

    responses = send_concurrently(server.url, calls, concurrency=len(calls))

    after = scrape(http)
    for index, (response, digit) in enumerate(zip(responses[:len(images)], images, strict=True)):
        assert response.status_code == 200, (index, response.text)
        assert response.json()["model"] == image_model.name
        assert_prediction(response.json(), image_model.image_probabilities(digit), image_model.labels, TOP_K)
    for response, text in zip(responses[len(images):], texts, strict=True):
        assert response.status_code == 200, response.text
        assert response.json()["model"] == text_model.name
        assert_prediction(response.json(), text_model.text_probabilities(text), text_model.labels, TOP_K)
    for model, count in ((image_model.name, len(images)), (text_model.name, len(texts))):
        grew = batches_larger_than_one(after, model) - batches_larger_than_one(before, model)
        assert grew > 0, f"no batch of {model} had more than one row under {len(calls)} concurrent requests"
        rows = value(after, "modelserver_batch_size_sum", model=model) - value(
            before, "modelserver_batch_size_sum", model=model)
        assert rows == count, f"{model}: batches held {rows} rows for {count} single-input requests"


def test_bad_image_among_concurrent_good_ones(
    server: ServerProcess, image_model: ModelUnderTest, digits: list[bytes],
) -> None:
    good = digits[128:192]
    bad_at = len(good) // 2
    calls = [_image_call(digit, index) for index, digit in enumerate(good)]
    bad_call = Call({"content": b"\x89PNG\r\n\x1a\n this is not really a PNG", "headers": {"Content-Type": "image/png"}})
    calls.insert(bad_at, bad_call)

    responses = send_concurrently(server.url, calls, concurrency=len(calls))

    body = assert_json_error(responses.pop(bad_at), 400, "invalid_input")
    assert "image" in body["error"]
    for index, (response, digit) in enumerate(zip(responses, good, strict=True)):
        assert response.status_code == 200, (index, response.text)
        assert_prediction(response.json(), image_model.image_probabilities(digit), image_model.labels, TOP_K)


def test_one_bad_image_fails_only_its_own_request(http: httpx.Client, image_model: ModelUnderTest,
                                                  digits: list[bytes]) -> None:
    files = [("file", ("a.png", digits[200], "image/png")), ("file", ("b.png", b"not an image", "image/png"))]
    body = assert_json_error(http.post("/predict", files=files), 400, "invalid_input")
    assert "image 1" in body["error"], body
    response = http.post("/predict", files={"file": ("a.png", digits[200], "image/png")})
    assert response.status_code == 200, response.text
    assert_prediction(response.json(), image_model.image_probabilities(digits[200]), image_model.labels, 5)


def test_full_queue_is_503_with_retry_after(start_server: StartServer, copy_models: CopyModels,
                                            image_model: ModelUnderTest, digits: list[bytes]) -> None:
    """With the batcher holding its queue (a long batch wait), requests beyond SERVE_MAX_QUEUE_SIZE are
    refused at once with 503 and Retry-After; the queued ones are answered right."""
    queue_size, sent = 4, 12

    def roomy_batches(model_root: Path) -> None:
        edit_config(model_root / image_model.directory.name, max_batch_size=64)

    models = copy_models(image_model.name, edit={image_model.name: roomy_batches})
    server = start_server(models, SERVE_MAX_QUEUE_SIZE=str(queue_size), SERVE_MAX_BATCH_WAIT_MS="3000",
                          SERVE_BATCH_SIZE_SEARCH="false")  # keep the roomy batch, so the wait holds all
    server.wait_ready()
    images = digits[:sent]

    responses = send_concurrently(server.url, [_image_call(digit, index) for index, digit in enumerate(images)],
                                  concurrency=sent)

    answered = [(response, image) for response, image in zip(responses, images, strict=True)
                if response.status_code == 200]
    refused = [response for response in responses if response.status_code != 200]
    assert len(answered) == queue_size, [response.status_code for response in responses]
    for response, image in answered:
        assert_prediction(response.json(), image_model.image_probabilities(image), image_model.labels, TOP_K)
    for response in refused:
        assert_json_error(response, 503, "queue_full")
        assert response.headers.get("retry-after", "").isdigit(), response.headers
    with server.client() as client:
        errors = value(scrape(client), "modelserver_errors_total", model=image_model.name, kind="queue_full")
    assert errors == sent - queue_size
