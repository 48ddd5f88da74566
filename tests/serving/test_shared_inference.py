"""Workers that hand their batches to one inference process (`SERVE_SHARED_INFERENCE`).

The batches of every worker run together in the inference process; one that dies is answered for (503, no
request hangs), /health/ready is 503 until a new one is ready, and then it serves again; a new model version
asked for at run time is refused with the reason, and the one serving goes on. `make test` also runs the tests
of the shared server against this mode, and the SIGTERM tests of test_workers.py and test_shutdown.py run in it.
"""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx

from .conftest import CopyModels, StartServer
from .support import (
    ModelUnderTest,
    ServerProcess,
    assert_json_error,
    assert_prediction,
    publish_version,
    scrape,
    value,
)

WORKERS = 2
REQUESTS = 16
KEY = "admin-key"


def start_shared(start_server: StartServer, models: Path, **env: str) -> ServerProcess:
    return start_server(models, SERVE_WORKERS=str(WORKERS), SERVE_SHARED_INFERENCE="true",
                        SERVE_BATCH_SIZE_SEARCH="false", **env).wait_ready()


def inference_pid(client: httpx.Client) -> int | None:
    process = client.get("/health").json()["inference_process"]
    return process["pid"] if process else None


def post_image(client: httpx.Client, image: bytes) -> httpx.Response:
    return client.post("/predict", files={"file": ("digit.png", image, "image/png")})


def test_batches_of_every_worker_run_together_in_the_inference_process(
        start_server: StartServer, models_dir: Path, image_model: ModelUnderTest, digits: list[bytes]) -> None:
    server = start_shared(start_server, models_dir, SERVE_MODELS=image_model.name)
    with server.client() as client:
        pid = inference_pid(client)
        workers = [worker["pid"] for worker in client.get("/health").json()["workers"]]
        before = scrape(client)
    assert pid is not None and pid not in workers and len(workers) == WORKERS
    images = digits[:REQUESTS]
    os.kill(pid, signal.SIGSTOP)  # each worker's first batch now waits there, and its later requests queue
    try:
        with httpx.Client(base_url=server.url, timeout=60, limits=httpx.Limits(max_connections=REQUESTS)) as pooled, \
                ThreadPoolExecutor(REQUESTS) as pool:
            futures: list[Future[httpx.Response]] = [pool.submit(post_image, pooled, image) for image in images]
            time.sleep(1.0)
            assert not any(future.done() for future in futures), "a worker answered without the inference process"
            os.kill(pid, signal.SIGCONT)
            answers = [future.result() for future in futures]
    finally:
        os.kill(pid, signal.SIGCONT)

    for answer, image in zip(answers, images, strict=True):
        assert answer.status_code == 200, answer.text
        assert_prediction(answer.json(), image_model.image_probabilities(image), image_model.labels, 5)
    with server.client() as client:
        after = scrape(client)

    def grew(name: str) -> float:
        return value(after, name, model=image_model.name) - value(before, name, model=image_model.name)

    assert grew("modelserver_batch_size_sum") == REQUESTS
    # Each worker sent a batch of its first request, then one of the requests it queued meanwhile: four batches
    # from two workers (unless one worker got at most one of the 16 connections: 34 in 65,536). The first two
    # waited in the stopped inference process and ran as one.
    assert grew("modelserver_batch_size_count") <= 3


def test_a_dead_inference_process_is_answered_for_and_replaced(
        start_server: StartServer, models_dir: Path, image_model: ModelUnderTest, digits: list[bytes]) -> None:
    server = start_shared(start_server, models_dir, SERVE_MODELS=image_model.name)
    with server.client() as client:
        dead = inference_pid(client)
        assert dead is not None
        os.kill(dead, signal.SIGKILL)
        refused = post_image(client, digits[0])
        assert refused.status_code == 503, refused.text
        assert refused.json()["code"] in ("inference_unreachable", "model_not_ready"), refused.text
        assert refused.headers["Retry-After"]
    server.wait_for(lambda probe: probe.get("/health/ready").status_code == 503, 10,
                    what="/health/ready to turn 503 once the inference process died")
    server.wait_ready(timeout=120)
    with server.client() as client:
        replacement = inference_pid(client)
        assert replacement not in (None, dead)
        answer = post_image(client, digits[1])
    assert answer.status_code == 200, answer.text
    assert_prediction(answer.json(), image_model.image_probabilities(digits[1]), image_model.labels, 5)


def test_a_new_version_needs_a_restart_and_the_serving_one_goes_on(
        start_server: StartServer, copy_models: CopyModels, image_model: ModelUnderTest, digits: list[bytes]) -> None:
    models = copy_models(image_model.name)
    server = start_shared(start_server, models, SERVE_API_KEY=KEY)
    version = image_model.config.version
    publish_version(models / image_model.name, version, version + 1, [f"new-{label}" for label in image_model.labels])
    with server.client(headers={"X-API-Key": KEY}) as client:
        refused = assert_json_error(client.post(f"/v2/repository/models/{image_model.name}/load"), 400,
                                    "model_load_failed")
        assert "restart" in refused["error"], refused
        answer = post_image(client, digits[0])
    assert answer.status_code == 200, answer.text
    assert answer.json()["version"] == version
    assert_prediction(answer.json(), image_model.image_probabilities(digits[0]), image_model.labels, 5)
