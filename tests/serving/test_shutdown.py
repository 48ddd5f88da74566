"""Graceful drain: on SIGTERM every request the server already accepted still gets its answer."""

from __future__ import annotations

import subprocess
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from .conftest import CopyModels, StartServer
from .support import ModelUnderTest, assert_prediction, edit_config, scrape, state_of, value, warm_up_runs_for

IN_FLIGHT = 50
# The batcher holds a request this long for batch-mates, so all of them are queued when SIGTERM arrives.
HOLD_MS = 3000


def test_sigterm_drains_requests_in_flight(start_server: StartServer, copy_models: CopyModels,
                                           image_model: ModelUnderTest, digits: list[bytes]) -> None:
    def roomy_batches(model_root: Path) -> None:
        # Room for every request in one batch, so the batcher waits for more instead of running at once.
        edit_config(model_root / image_model.directory.name, max_batch_size=IN_FLIGHT + 14)

    models = copy_models(image_model.name, edit={image_model.name: roomy_batches})
    server = start_server(models, SERVE_MAX_BATCH_WAIT_MS=str(HOLD_MS), SERVE_GRACEFUL_SHUTDOWN_S="60",
                          SERVE_BATCH_SIZE_SEARCH="false")  # keep the roomy batch, so the wait holds all
    server.wait_ready()
    images = digits[:IN_FLIGHT]
    limits = httpx.Limits(max_connections=IN_FLIGHT)
    with server.client(limits=limits) as client, ThreadPoolExecutor(IN_FLIGHT) as pool:
        futures: list[Future[httpx.Response]] = [
            pool.submit(client.post, "/predict", files={"file": (f"{i}.png", image, "image/png")})
            for i, image in enumerate(images)
        ]

        def all_queued(probe: httpx.Client) -> bool:
            assert not any(future.done() for future in futures), "requests finished before SIGTERM was sent"
            return value(scrape(probe), "modelserver_queue_depth", model=image_model.name) == IN_FLIGHT

        server.wait_for(all_queued, 60, what=f"{IN_FLIGHT} requests queued")
        server.terminate()
        outcomes = [future.exception() or future.result() for future in futures]

    lost = [(i, repr(outcome)) for i, outcome in enumerate(outcomes) if not isinstance(outcome, httpx.Response)]
    assert not lost, f"accepted requests got no answer after SIGTERM: {lost}\n{server.log()}"
    for outcome, image in zip(outcomes, images, strict=True):
        assert isinstance(outcome, httpx.Response)
        assert outcome.status_code == 200, outcome.text
        assert_prediction(outcome.json(), image_model.image_probabilities(image), image_model.labels, 5)
    assert server.process is not None
    server.process.wait(60)
    assert "Application shutdown complete" in server.log(), server.log()


def test_sigterm_exit_status_is_zero(start_server: StartServer, models_dir: Path,
                                     image_model: ModelUnderTest, digits: list[bytes]) -> None:
    """A graceful stop on SIGTERM is a success: exit status 0, not death by the signal."""
    server = start_server(models_dir, SERVE_MODELS=image_model.name)
    server.wait_ready()
    with server.client() as client:
        assert client.post("/predict", files={"file": ("d.png", digits[0], "image/png")}).status_code == 200
    server.terminate()
    assert server.process is not None
    exit_status = server.process.wait(60)
    assert "Application shutdown complete" in server.log(), server.log()
    assert exit_status == 0, f"exit status {exit_status} after SIGTERM\n--- server log ---\n{server.log()}"


def test_sigterm_during_warm_up_does_not_wait_for_it(start_server: StartServer, models_dir: Path,
                                                     image_model: ModelUnderTest) -> None:
    """A model still warming up (here for many minutes) does not hold up shutdown."""
    runs = warm_up_runs_for(image_model, seconds=900)
    server = start_server(models_dir, SERVE_MODELS=image_model.name, SERVE_WARMUP_RUNS=str(runs))
    server.wait_for(lambda client: state_of(client, image_model.name) == "warming", 60, what="warm-up to start")
    server.terminate()
    assert server.process is not None
    try:
        server.process.wait(30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running 30 s after SIGTERM, waiting for a {runs}-run warm-up\n{server.log()}")
