"""Per-key rate limits and in-flight quotas (the keys file's `rate_per_s`, `burst`, `max_in_flight`) on a real
server, with 1 and 2 workers: each limit holds for the service instance, shared by its workers, neither
multiplied by them nor divided among them."""

from __future__ import annotations

import os
import signal
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from .conftest import StartServer
from .support import ModelUnderTest, ServerProcess, assert_json_error, b64, scrape, value
from .test_keys import replace_file, table

RATE, BURST = 10, 5  # the greedy and the polite key's limit
LOAD_S = 4.0
KEYS = {name: f"{name}-key-9q" for name in ("greedy", "polite", "unlimited", "whole", "steady", "rotating",
                                            "narrow")}
KEYS_FILE = (
    table("greedy", KEYS["greedy"], "infer", extra=f"rate_per_s = {RATE}\nburst = {BURST}")
    + table("polite", KEYS["polite"], "infer", extra=f"rate_per_s = {RATE}\nburst = {BURST}")
    + table("unlimited", KEYS["unlimited"], "infer")
    + table("whole", KEYS["whole"], "infer", extra="rate_per_s = 0.2\nburst = 8")
    + table("steady", KEYS["steady"], "infer", extra="rate_per_s = 0.2\nburst = 3")
    + table("narrow", KEYS["narrow"], "infer", extra="max_in_flight = 2"))


def as_key(name: str) -> dict[str, str]:
    return {"X-API-Key": KEYS[name]}


def one_digit_infer() -> dict[str, object]:
    return {"inputs": [{"name": "pixel_values", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.5] * 784}]}


@pytest.fixture(scope="module", params=[1, 2], ids=["1-worker", "2-workers"])
def limited(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, models_dir: Path,
            image_model: ModelUnderTest) -> Iterator[tuple[ServerProcess, Path]]:
    """A server of the image model with the keys above, and its keys file."""
    workdir = tmp_path_factory.mktemp(f"limited-{request.param}")
    keys_file = workdir / "keys.toml"
    keys_file.write_text(KEYS_FILE + table("rotating", KEYS["rotating"], "infer", extra="rate_per_s = 0.2\nburst = 30"))
    server = ServerProcess(models_dir, workdir, {
        "SERVE_MODELS": image_model.name, "SERVE_API_KEYS_FILE": str(keys_file),
        "SERVE_WORKERS": str(request.param), "SERVE_BATCH_SIZE_SEARCH": "false"})
    server.start().wait_ready()
    yield server, keys_file
    server.stop()


@dataclass
class Run:
    """The answers one paced client got: status codes, latencies in seconds and the refusals."""

    statuses: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    refusals: list[httpx.Response] = field(default_factory=list)

    def count(self, status: int) -> int:
        return self.statuses.count(status)


def paced(url: str, key: str, per_s: float, seconds: float, digit: bytes, *, keep_alive: bool) -> Run:
    """POST /predict with `key` `per_s` times a second for `seconds`, on one keep-alive connection or on a new
    connection each time (spread over the workers by the kernel)."""
    run = Run()
    limits = httpx.Limits(max_keepalive_connections=1 if keep_alive else 0)
    with httpx.Client(base_url=url, timeout=30, limits=limits, headers={"X-API-Key": key}) as client:
        start = time.perf_counter()
        for sent in range(int(per_s * seconds)):
            time.sleep(max(0.0, start + sent / per_s - time.perf_counter()))
            began = time.perf_counter()
            response = client.post("/predict", json={"image": b64(digit)})
            run.latencies.append(time.perf_counter() - began)
            run.statuses.append(response.status_code)
            if response.status_code == 429:
                run.refusals.append(response)
    return run


def test_greedy_key_is_limited_and_polite_key_is_not_slowed(limited: tuple[ServerProcess, Path],
                                                            image_model: ModelUnderTest, digits: list[bytes]) -> None:
    """The greedy key at 4x its rate (4 clients, a new connection per request, so both workers see it) gets
    about its rate of 200s and 429s with Retry-After for the rest; the polite key at half its rate, meanwhile,
    gets every answer, about as fast as alone. With the limit per worker instead of shared, the greedy key
    would get twice its rate with 2 workers."""
    server, _ = limited
    polite_alone = paced(server.url, KEYS["polite"], RATE / 2, 2.0, digits[0], keep_alive=True)
    assert set(polite_alone.statuses) == {200}, polite_alone.statuses
    with ThreadPoolExecutor(5) as pool:
        started = time.perf_counter()
        greedy_runs = [pool.submit(paced, server.url, KEYS["greedy"], RATE, LOAD_S, digits[1 + index], keep_alive=False)
                       for index in range(4)]
        polite_future = pool.submit(paced, server.url, KEYS["polite"], RATE / 2, LOAD_S, digits[0], keep_alive=True)
        greedy = Run()
        for future in greedy_runs:
            part = future.result()
            greedy.statuses += part.statuses
            greedy.refusals += part.refusals
        elapsed = time.perf_counter() - started
        polite = polite_future.result()

    assert set(polite.statuses) == {200}, polite.statuses
    alone, loaded = statistics.median(polite_alone.latencies), statistics.median(polite.latencies)
    assert loaded <= 3 * alone + 0.03, (f"polite key's median latency {loaded * 1000:.1f} ms under load, "
                                        f"{alone * 1000:.1f} ms alone")

    allowed = BURST + RATE * elapsed  # what the bucket lets through over the run
    assert set(greedy.statuses) == {200, 429}, greedy.statuses
    assert 0.6 * allowed <= greedy.count(200) <= 1.3 * allowed, (greedy.count(200), allowed, len(greedy.statuses))
    assert greedy.count(429) >= len(greedy.statuses) / 2, greedy.statuses
    for refusal in greedy.refusals[:20]:
        body = assert_json_error(refusal, 429, "rate_limited")
        assert all(part in body["error"] for part in ("'greedy'", f"{RATE}", f"burst {BURST}", image_model.name)), body
        assert refusal.headers["retry-after"].isdigit() and int(refusal.headers["retry-after"]) >= 1, refusal.headers
        assert KEYS["greedy"] not in refusal.text

    with server.client() as client:
        samples = scrape(client)
    assert value(samples, "modelserver_key_refusals_total", key="greedy", model=image_model.name) == greedy.count(429)
    assert value(samples, "modelserver_key_refusals_total", key="polite", model=image_model.name) == 0
    assert value(samples, "modelserver_key_requests_total", key="polite", model=image_model.name) == (
        len(polite.statuses) + len(polite_alone.statuses))


def test_one_connection_gets_the_whole_limit(limited: tuple[ServerProcess, Path], digits: list[bytes]) -> None:
    """A keep-alive connection lands on one worker: it gets the key's whole burst there, not a share of it."""
    server, _ = limited
    with server.client(headers=as_key("whole")) as client:
        statuses = [client.post("/predict", json={"image": b64(digits[2])}).status_code for _ in range(10)]
    assert statuses[:8] == [200] * 8 and statuses[8:] == [429, 429], statuses


def test_v2_infer_and_predict_share_the_key_limit(limited: tuple[ServerProcess, Path], image_model: ModelUnderTest,
                                                  digits: list[bytes]) -> None:
    server, _ = limited
    path = f"/v2/models/{image_model.name}/infer"
    with server.client(headers=as_key("steady")) as client:
        statuses = [client.post(path, json=one_digit_infer()).status_code for _ in range(3)]
        refused = client.post(path, json=one_digit_infer())
        predict = client.post("/predict", json={"image": b64(digits[3])})
    assert statuses == [200, 200, 200], statuses
    body = assert_json_error(refused, 429, "rate_limited")
    assert "'steady'" in body["error"] and image_model.name in body["error"], body
    assert int(refused.headers["retry-after"]) >= 1, refused.headers
    assert_json_error(predict, 429, "rate_limited")


def test_key_without_limits_is_never_refused(limited: tuple[ServerProcess, Path], digits: list[bytes]) -> None:
    server, _ = limited

    def ask(index: int) -> int:
        with server.client(headers=as_key("unlimited")) as client:
            return sum(client.post("/predict", json={"image": b64(digits[index])}).status_code == 200
                       for _ in range(10))

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(ask, range(8))) == 80


def test_a_changed_limit_takes_effect_without_restart(limited: tuple[ServerProcess, Path],
                                                      digits: list[bytes]) -> None:
    server, keys_file = limited

    def statuses(count: int) -> list[int]:
        with server.client(headers=as_key("rotating")) as client:
            return [client.post("/predict", json={"image": b64(digits[4])}).status_code for _ in range(count)]

    assert statuses(6) == [200] * 6  # burst 30
    replace_file(keys_file, KEYS_FILE + table("rotating", KEYS["rotating"], "infer", extra="rate_per_s = 0.2\nburst = 2"))
    time.sleep(2.5)  # every worker has looked at the file by now (once a second)
    assert statuses(4) == [200, 200, 429, 429]  # the bucket now holds at most 2 tokens
    replace_file(keys_file, KEYS_FILE + table("rotating", KEYS["rotating"], "infer"))
    time.sleep(2.5)
    assert statuses(10) == [200] * 10


# In-flight quotas -------------------------------------------------------------------------------------------

BATCH_WAIT_MS = 2000  # every request waits this long in its queue for a batch to fill: slow, and not mocked


@pytest.fixture(scope="module", params=[1, 2], ids=["1-worker", "2-workers"])
def slow(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, models_dir: Path,
         image_model: ModelUnderTest) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp(f"slow-{request.param}")
    keys_file = workdir / "keys.toml"
    keys_file.write_text(KEYS_FILE)
    server = ServerProcess(models_dir, workdir, {
        "SERVE_MODELS": image_model.name, "SERVE_API_KEYS_FILE": str(keys_file),
        "SERVE_WORKERS": str(request.param), "SERVE_BATCH_SIZE_SEARCH": "false",
        "SERVE_MAX_BATCH_WAIT_MS": str(BATCH_WAIT_MS)})
    server.start().wait_ready()
    yield server
    server.stop()


def queued(server: ServerProcess, model: str) -> float:
    with server.client() as client:
        return value(scrape(client), "modelserver_queue_depth", model=model)


def test_max_in_flight_refuses_the_next_request_and_frees_every_slot(slow: ServerProcess,
                                                                    image_model: ModelUnderTest,
                                                                    digits: list[bytes]) -> None:
    """Two requests of a key with max_in_flight 2 wait in the queue (on any worker): a third is refused at once.
    Requests that end in an error, a deadline or a client that left give their place back."""
    server, model = slow, image_model.name

    def predict(index: int, **options: object) -> httpx.Response:
        timeout = options.pop("timeout", 30.0)
        with server.client(headers=as_key("narrow"), timeout=timeout) as client:
            return client.post("/predict", json={"image": b64(digits[index])}, **options)  # type: ignore[arg-type]

    with ThreadPoolExecutor(2) as pool:
        holding = [pool.submit(predict, index) for index in range(2)]
        server.wait_for(lambda _: queued(server, model) == 2, 10, what="two requests queued")
        refused = predict(2)
        answers = [future.result() for future in holding]
    body = assert_json_error(refused, 429, "rate_limited")
    assert all(part in body["error"] for part in ("'narrow'", "max_in_flight 2", model)), body
    assert refused.headers["retry-after"] == "1"
    assert [answer.status_code for answer in answers] == [200, 200], [answer.text for answer in answers]

    with server.client(headers=as_key("narrow")) as client:
        bad_shape = {"inputs": [{"name": "pixel_values", "shape": [1, 3], "datatype": "FP32", "data": [0.0] * 3}]}
        for _ in range(3):
            assert_json_error(client.post(f"/v2/models/{model}/infer", json=bad_shape), 400)
        for _ in range(3):
            late = client.post("/predict", json={"image": b64(digits[3])}, headers={"X-Request-Timeout": "100"})
            assert_json_error(late, 503, "deadline_exceeded")
    for index in range(2):
        with pytest.raises(httpx.ReadTimeout):
            predict(index, timeout=0.3)  # the client leaves while its request waits
    server.wait_for(lambda _: queued(server, model) == 0, 10, what="the abandoned requests to leave the queue")
    with ThreadPoolExecutor(2) as pool:
        assert [answer.status_code for answer in pool.map(predict, range(2))] == [200, 200]


def test_a_worker_that_dies_mid_request_leaks_no_in_flight_count(start_server: StartServer, models_dir: Path,
                                                                 image_model: ModelUnderTest,
                                                                 digits: list[bytes], tmp_path: Path) -> None:
    """Both workers killed while they hold the key's two requests: once replaced, the key has its places back."""
    keys_file = tmp_path / "keys.toml"
    keys_file.write_text(KEYS_FILE)
    server = start_server(models_dir, SERVE_MODELS=image_model.name, SERVE_API_KEYS_FILE=str(keys_file),
                          SERVE_WORKERS="2", SERVE_BATCH_SIZE_SEARCH="false",
                          SERVE_MAX_BATCH_WAIT_MS=str(BATCH_WAIT_MS)).wait_ready()

    def predict(index: int) -> int:
        with server.client(headers=as_key("narrow")) as client:
            try:
                return client.post("/predict", json={"image": b64(digits[index])}).status_code
            except httpx.TransportError:
                return 0  # its worker was killed

    with server.client() as client:
        victims = [worker["pid"] for worker in client.get("/health").json()["workers"]]
    with ThreadPoolExecutor(2) as pool:
        holding = [pool.submit(predict, index) for index in range(2)]
        server.wait_for(lambda _: queued(server, image_model.name) == 2, 10, what="two requests queued")
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        assert [future.result() for future in holding] == [0, 0]
    server.wait_for(lambda client: not set(victims) & {worker["pid"] for worker in client.get("/health").json()["workers"]},
                    30, what="the killed workers to be replaced")
    server.wait_ready()
    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(predict, range(2))) == [200, 200]
