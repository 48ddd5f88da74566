"""Graceful drain: on SIGTERM every request the server already accepted still gets its answer."""

from __future__ import annotations

import subprocess
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from .conftest import CopyModels, StartServer
from .support import (
    SCORE_TOLERANCE,
    ModelUnderTest,
    ServerProcess,
    assert_prediction,
    edit_config,
    scrape,
    state_of,
    value,
    warm_up_runs_for,
)

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


CLIENTS = 8
SHUTDOWN_DELAY_S = 2.0


@dataclass
class Exchange:
    """One request of a client under load: what it asked, when, and what came back."""

    kind: str
    item: int
    sent_at: float
    answered_at: float
    response: httpx.Response | None  # None: no answer, see `error`
    error: str = ""

    @property
    def status(self) -> int:
        return self.response.status_code if self.response is not None else 0


def _send(client: httpx.Client, kind: str, item: int, digits: list[bytes], reviews: list[str],
          text_model: ModelUnderTest) -> httpx.Response:
    if kind == "image":  # no model named: the registry picks the only image model
        return client.post("/predict", files={"file": (f"{item}.png", digits[item], "image/png")})
    if kind == "text":
        return client.post("/predict", params={"model": text_model.name}, json={"text": reviews[item]})
    feeds = text_model.text_feeds([reviews[item]])
    inputs = [{"name": name, "shape": list(array.shape), "datatype": "INT64", "data": array.ravel().tolist()}
              for name, array in sorted(feeds.items())]
    return client.post(f"/v2/models/{text_model.name}/infer", json={"inputs": inputs})


def _check_answer(exchange: Exchange, image_model: ModelUnderTest, text_model: ModelUnderTest,
                  digits: list[bytes], reviews: list[str]) -> None:
    """A 200 carries the right answer to its own input; anything else is the shutdown's refusal."""
    response = exchange.response
    assert response is not None, exchange.error
    if response.status_code != 200:
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "shutting_down", response.text
        assert int(response.headers["retry-after"]) >= 1
        assert response.headers["connection"] == "close"
    elif exchange.kind == "image":
        expected = image_model.image_probabilities(digits[exchange.item])
        assert_prediction(response.json(), expected, image_model.labels, 5)
    elif exchange.kind == "text":
        expected = text_model.text_probabilities(reviews[exchange.item])
        assert_prediction(response.json(), expected, text_model.labels, 5)
    else:
        (output,) = response.json()["outputs"]
        expected_scores = text_model.run(text_model.text_feeds([reviews[exchange.item]]))
        np.testing.assert_allclose(np.asarray(output["data"]).reshape(output["shape"]), expected_scores,
                                   rtol=SCORE_TOLERANCE, atol=SCORE_TOLERANCE)


def _readiness_after(server: ServerProcess, until: float) -> int:
    """Poll /health/ready until it stops answering 200 (or `until`): its last status, 0 for no answer."""
    with server.client(timeout=5.0) as probe:
        while True:
            try:
                status = probe.get("/health/ready").status_code
            except httpx.TransportError:
                return 0
            if status != 200 or time.monotonic() > until:
                return status


@pytest.mark.parametrize(("workers", "shared_inference"), [(1, "false"), (2, "false"), (2, "true")],
                         ids=["1-worker", "2-workers", "2-workers-shared-inference"])
def test_sigterm_under_load_loses_no_request(workers: int, shared_inference: str, start_server: StartServer,
                                             models_dir: Path,
                                             image_model: ModelUnderTest, text_model: ModelUnderTest,
                                             digits: list[bytes], reviews: list[str]) -> None:
    """Clients in a closed loop on keep-alive connections (image and text /predict, v2 infer) when SIGTERM
    comes: /health/ready turns 503 at once, every request gets one answer, either the right prediction or
    503 `shutting_down` (after which the client stops, as a load balancer would stop sending), and the
    server exits 0 once the delay and the drain are over."""
    server = start_server(
        models_dir, SERVE_MODELS=f"{image_model.name},{text_model.name}", SERVE_WORKERS=str(workers),
        SERVE_SHARED_INFERENCE=shared_inference, SERVE_SHUTDOWN_DELAY_S=str(SHUTDOWN_DELAY_S),
        SERVE_MAX_BATCH_WAIT_MS="20",  # requests wait in the batchers, so some are queued when SIGTERM comes
    )
    server.wait_ready(timeout=180)
    kinds = ["image", "text", "v2"]
    exchanges: list[list[Exchange]] = [[] for _ in range(CLIENTS)]
    give_up = threading.Event()

    def run_client(number: int) -> None:
        kind = kinds[number % len(kinds)]
        count = len(digits) if kind == "image" else len(reviews)
        with server.client(timeout=30.0) as client:
            while not give_up.is_set():
                item, sent_at = (number + len(exchanges[number]) * CLIENTS) % count, time.monotonic()
                try:
                    response, error = _send(client, kind, item, digits, reviews, text_model), ""
                except httpx.HTTPError as exc:
                    response, error = None, repr(exc)
                exchange = Exchange(kind, item, sent_at, time.monotonic(), response, error)
                exchanges[number].append(exchange)
                if exchange.status != 200:
                    return

    threads = [threading.Thread(target=run_client, args=(number,)) for number in range(CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        server.wait_for(lambda _: sum(map(len, exchanges)) >= 20 * CLIENTS, 60, what="traffic to flow")
        sigterm_at = time.monotonic()
        server.terminate()
        ready = _readiness_after(server, sigterm_at + 5)
        not_ready_after = time.monotonic() - sigterm_at
    except BaseException:
        give_up.set()
        raise
    finally:
        for thread in threads:
            thread.join(60)
    assert server.process is not None
    exit_status = server.process.wait(SHUTDOWN_DELAY_S + 60)

    everything = [exchange for client_exchanges in exchanges for exchange in client_exchanges]
    lost = [exchange for exchange in everything if exchange.response is None]
    assert not lost, f"{len(lost)} of {len(everything)} requests got no answer: {lost[:3]}\n{server.log()}"
    assert ready == 503, f"/health/ready answered {ready or 'nothing'} after SIGTERM, not 503"
    # With several workers, uvicorn's supervisor passes signals on within 0.5 s.
    assert not_ready_after < (0.5 if workers == 1 else 1.0), f"/health/ready 503 only {not_ready_after:.2f} s on"
    for exchange in everything:
        _check_answer(exchange, image_model, text_model, digits, reviews)
    assert all(client_exchanges[-1].status == 503 for client_exchanges in exchanges)
    in_flight = [exchange for exchange in everything if exchange.sent_at < sigterm_at < exchange.answered_at]
    assert any(exchange.status == 200 for exchange in in_flight), "no request in flight at SIGTERM was served"
    assert exit_status == 0, f"exit status {exit_status}\n{server.log()}"
    assert "Application shutdown complete" in server.log()
