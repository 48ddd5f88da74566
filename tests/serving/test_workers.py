"""Several worker processes on one port (`SERVE_WORKERS=2`): the service still reads as one.

Answers are right whichever worker takes them, /metrics counts every worker's requests, /health/ready is 200
only while every worker is ready (a killed worker is replaced and counted again once ready), the API key and
v2 work as with one process, and SIGTERM drains every worker with no request lost.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from app.models.batch_tuning import TOLERANCE
from app.models.runtime import usable_cpus
from app.topology.workers import WARM_UP_TIMING, one_worker_at_a_time

from .conftest import CopyModels, StartServer
from .support import (
    REPO_ROOT,
    Call,
    ModelUnderTest,
    ServerProcess,
    assert_prediction,
    edit_config,
    scrape,
    send_concurrently,
    value,
)

WORKERS = 2


def start_workers(start_server: StartServer, models: Path, **env: str) -> ServerProcess:
    return start_server(models, SERVE_WORKERS=str(WORKERS), **env).wait_ready()


def worker_pids(client: httpx.Client) -> list[int]:
    health = client.get("/health").json()
    return [worker["pid"] for worker in health["workers"]]


def test_workers_answer_as_one_service(start_server: StartServer, models_dir: Path, image_model: ModelUnderTest,
                                       text_model: ModelUnderTest, digits: list[bytes], reviews: list[str]) -> None:
    server = start_workers(start_server, models_dir, SERVE_MODELS=f"{image_model.name},{text_model.name}",
                           SERVE_API_KEYS="first-key,second-key")
    headers = {"X-API-Key": "second-key"}
    images, texts = digits[:48], reviews * 2
    calls = [Call({"files": {"file": ("digit.png", image, "image/png")}, "headers": headers}) for image in images]
    calls += [Call({"json": {"text": text}, "headers": headers}) for text in texts]
    answers = send_concurrently(server.url, calls, concurrency=32)

    for answer, image in zip(answers, images, strict=False):
        assert answer.status_code == 200, answer.text
        assert_prediction(answer.json(), image_model.image_probabilities(image), image_model.labels, 5)
    for answer, text in zip(answers[len(images):], texts, strict=True):
        assert answer.status_code == 200, answer.text
        assert_prediction(answer.json(), text_model.text_probabilities(text), text_model.labels, 5)

    with server.client() as client:
        assert client.post("/predict", json={"text": "no key"}).status_code == 401
        pixels = image_model.image_tensor(images[0])
        v2 = client.post(f"/v2/models/{image_model.name}/infer", headers=headers, json={"inputs": [{
            "name": image_model.config.inputs[0].name, "shape": [1, *pixels.shape], "datatype": "FP32",
            "data": pixels.ravel().tolist(),
        }]})
        assert v2.status_code == 200, v2.text
        assert len(worker_pids(client)) == WORKERS
        samples = scrape(client)
    served = value(samples, "modelserver_requests_total", protocol="http", route="/predict", model=image_model.name, status="200")
    served += value(samples, "modelserver_requests_total", protocol="http", route="/predict", model=text_model.name, status="200")
    assert served == len(calls), "/metrics must count the requests of every worker, whichever answers the scrape"
    assert value(samples, "modelserver_queue_capacity", model=image_model.name) > 0
    assert value(samples, "modelserver_model_ready", model=text_model.name) == 1
    assert value(samples, "process_resident_memory_bytes") > 0


def test_ready_only_while_every_worker_is(start_server: StartServer, models_dir: Path,
                                          image_model: ModelUnderTest) -> None:
    server = start_workers(start_server, models_dir, SERVE_MODELS=image_model.name)
    with server.client() as client:
        victim, survivor = worker_pids(client)
    os.kill(victim, signal.SIGKILL)

    def replaced(client: httpx.Client) -> bool:
        pids = worker_pids(client)
        return victim not in pids and len(pids) == WORKERS

    # Until the supervisor's replacement has loaded its models, the service is not ready.
    server.wait_for(lambda client: client.get("/health/ready").status_code == 503, 30,
                    what="/health/ready to turn 503 once a worker died")
    server.wait_ready(timeout=120)
    server.wait_for(replaced, 30, what="a new worker in place of the killed one")
    with server.client() as client:
        assert survivor in worker_pids(client)


CONNECTIONS = 16
BUSY_AFTER_CONNECTING_S = 0.2


def connection_holders(pids: list[int], port: int) -> dict[int, int]:
    """The worker holding each accepted connection to `port`, by the client's port (read from /proc)."""
    pid_of_socket = {}
    for pid in pids:
        for descriptor in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(descriptor)
            except OSError:  # closed meanwhile
                continue
            if target.startswith("socket:["):
                pid_of_socket[int(target[len("socket:["):-1])] = pid
    holders = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], int(fields[9])
        if int(local.split(":")[1], 16) == port and inode in pid_of_socket:
            holders[int(remote.split(":")[1], 16)] = pid_of_socket[inode]
    return holders


def test_connections_opened_together_spread_over_the_workers(start_server: StartServer, models_dir: Path,
                                                             image_model: ModelUnderTest) -> None:
    """A client pool's connections, opened together, are shared among the workers even when one worker is busy
    as they arrive: each worker listens on its own socket (SO_REUSEPORT) and the kernel spreads new connections
    by address. On one shared socket the idle worker accepted them all, and then served that pool alone for as
    long as its connections lived. (All 16 on one worker by chance: 2 in 65,536.)"""
    server = start_workers(start_server, models_dir, SERVE_MODELS=image_model.name)
    with server.client() as client:
        pids = worker_pids(client)
    busy = pids[0]
    os.kill(busy, signal.SIGSTOP)  # busy, with a batch on its event loop say, while the pool connects and a bit
    try:
        connections = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(CONNECTIONS)]
        time.sleep(BUSY_AFTER_CONNECTING_S)
    finally:
        os.kill(busy, signal.SIGCONT)
    try:
        for connection in connections:
            connection.sendall(b"GET /health/live HTTP/1.1\r\nHost: test\r\n\r\n")
        for connection in connections:
            assert connection.recv(4096).startswith(b"HTTP/1.1 200")
        holders = connection_holders(pids, server.port)
        held = [holders[connection.getsockname()[1]] for connection in connections]
    finally:
        for connection in connections:
            connection.close()
    assert set(held) == set(pids), f"connections per worker: {[held.count(pid) for pid in pids]}"


def test_a_second_service_cannot_join_the_port(start_server: StartServer, models_dir: Path,
                                               image_model: ModelUnderTest, tmp_path: Path) -> None:
    """Any process of the same user may bind a port that is bound with SO_REUSEPORT; a second service started on
    a taken port by mistake must still fail at once, not quietly take a share of the first one's connections."""
    server = start_workers(start_server, models_dir, SERVE_MODELS=image_model.name)
    second = subprocess.run([sys.executable, "-m", "app"], env=server.environment(), cwd=tmp_path,
                            capture_output=True, text=True, check=False, timeout=60)
    assert second.returncode == 3, second.stderr  # uvicorn's STARTUP_FAILURE
    assert "address already in use" in second.stderr.lower()


THREAD_CHOICE = re.compile(r"model (\S+): (\d+) intra-op threads by measurement \(ms per batch of one: "
                           r"(\d+) threads ([\d.]+), (\d+) threads ([\d.]+)\)")


@pytest.mark.skipif(usable_cpus() < WORKERS, reason="needs a CPU per worker, to divide the threads among them")
def test_each_worker_keeps_the_thread_count_that_ran_a_batch_of_one_faster(
        start_server: StartServer, models_dir: Path, image_model: ModelUnderTest, text_model: ModelUnderTest) -> None:
    """With the threads not set, each worker times a batch of one with its share of the CPUs' threads and with
    all of them, keeps all of them only if clearly faster, and says so in its log and in /models; a thread count
    that is set is kept as set."""
    server = start_workers(start_server, models_dir, SERVE_MODELS=f"{image_model.name},{text_model.name}")
    with server.client() as client:
        listed = {item["name"]: item["intra_op_threads"] for item in client.get("/models").json()["models"]}
    choices = THREAD_CHOICE.findall(server.log())
    assert sorted(name for name, *_ in choices) == sorted([image_model.name, text_model.name] * WORKERS)
    for name, chosen, share, share_ms, every, every_ms in choices:
        assert (int(share), int(every)) == (usable_cpus() // WORKERS, usable_cpus())
        # All the threads only if their batch was clearly faster (the log rounds to 1 µs: 1% of slack).
        if int(chosen) == int(every):
            assert float(every_ms) <= TOLERANCE * float(share_ms) * 1.01, (name, chosen)
        else:
            assert int(chosen) == int(share) and float(every_ms) >= TOLERANCE * float(share_ms) * 0.99, (name, chosen)
    for name, threads in listed.items():
        assert str(threads) in {chosen for model, chosen, *_ in choices if model == name}

    fixed = start_workers(start_server, models_dir, SERVE_MODELS=image_model.name, SERVE_INTRA_OP_THREADS="1")
    with fixed.client() as client:
        assert client.get("/models").json()["models"][0]["intra_op_threads"] == 1
    assert not THREAD_CHOICE.search(fixed.log())


IN_FLIGHT = 40
HOLD_MS = 3000


@pytest.mark.parametrize("shared_inference", ["false", "true"], ids=["own-sessions", "shared-inference"])
def test_sigterm_drains_every_worker(start_server: StartServer, copy_models: CopyModels, shared_inference: str,
                                     image_model: ModelUnderTest, digits: list[bytes]) -> None:
    models = copy_models(image_model.name, edit={
        image_model.name: lambda root: edit_config(root / image_model.directory.name, max_batch_size=IN_FLIGHT + 24)
    })
    server = start_workers(start_server, models, SERVE_MAX_BATCH_WAIT_MS=str(HOLD_MS), SERVE_GRACEFUL_SHUTDOWN_S="60",
                           SERVE_BATCH_SIZE_SEARCH="false", SERVE_SHARED_INFERENCE=shared_inference)
    images = digits[:IN_FLIGHT]
    with server.client(limits=httpx.Limits(max_connections=IN_FLIGHT)) as client, \
            ThreadPoolExecutor(IN_FLIGHT) as pool:
        futures: list[Future[httpx.Response]] = [
            pool.submit(client.post, "/predict", files={"file": ("digit.png", image, "image/png")}) for image in images
        ]
        server.wait_for(lambda probe: value(scrape(probe), "modelserver_queue_depth", model=image_model.name)
                        == IN_FLIGHT, 60, what=f"{IN_FLIGHT} requests queued across the workers")
        server.terminate()
        outcomes = [future.exception() or future.result() for future in futures]

    for outcome, image in zip(outcomes, images, strict=True):
        assert isinstance(outcome, httpx.Response), f"a request got no answer: {outcome!r}\n{server.log()}"
        assert outcome.status_code == 200, outcome.text
        assert_prediction(outcome.json(), image_model.image_probabilities(image), image_model.labels, 5)
    assert server.process is not None
    assert server.process.wait(60) == 0, server.log()


def test_warm_up_timings_take_turns_across_workers(tmp_path: Path) -> None:
    """Workers start together; timing batch sizes and thread counts in two at once would measure their
    competition for the CPUs. A second worker's timing waits until the first one's is done."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    other_worker = ("import sys, time\nfrom pathlib import Path\nfrom app.topology.workers import WARM_UP_TIMING, "
                    "one_worker_at_a_time\nprint('waiting', flush=True)\n"
                    "with one_worker_at_a_time(Path(sys.argv[1]), WARM_UP_TIMING):\n    print(time.monotonic(), flush=True)\n")
    with one_worker_at_a_time(tmp_path, WARM_UP_TIMING):
        other = subprocess.Popen([sys.executable, "-c", other_worker, str(tmp_path)], env=env, cwd=REPO_ROOT,
                                 stdout=subprocess.PIPE, text=True)
        assert other.stdout is not None
        assert other.stdout.readline().strip() == "waiting"
        time.sleep(0.5)
        assert other.poll() is None, "the other worker's search ran while this one's was running"
        released = time.monotonic()
    started = float(other.stdout.readline())
    assert other.wait(30) == 0
    assert started >= released
