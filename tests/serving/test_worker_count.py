"""`SERVE_WORKERS=auto`: one worker per usable CPU, at most MAX_AUTO_WORKERS, and one where the sessions ask
for CUDA; `python -m app` resolves it once and hands the number to its server processes, the start-up log says
it and why, and a server started with it answers."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.models.runtime import usable_cpus
from app.settings import Settings
from app.topology import worker_count
from app.topology.topology import Workers, choose_topology
from app.topology.worker_count import MAX_AUTO_WORKERS, auto_workers

from .conftest import StartServer
from .support import ModelUnderTest, assert_prediction


@pytest.mark.parametrize(("cpus", "workers"), [(1, 1), (2, 2), (MAX_AUTO_WORKERS, MAX_AUTO_WORKERS),
                                               (64, MAX_AUTO_WORKERS)])
def test_auto_is_one_worker_per_usable_cpu_up_to_the_cap(monkeypatch: pytest.MonkeyPatch, cpus: int,
                                                         workers: int) -> None:
    monkeypatch.setattr(worker_count, "usable_cpus", lambda: cpus)
    choice = auto_workers("cpu")
    assert choice.count == workers
    assert f"one per usable CPU: {cpus}" in choice.reason
    assert ("capped" in choice.reason) == (cpus > MAX_AUTO_WORKERS)


def test_auto_is_one_worker_where_the_sessions_ask_for_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """`cuda` asks for CUDA whether or not this ONNX Runtime build has it; every worker would share its GPU."""
    monkeypatch.setattr(worker_count, "usable_cpus", lambda: 16)
    choice = auto_workers("cuda")
    assert choice.count == 1
    assert "CUDAExecutionProvider" in choice.reason


def test_the_topology_resolves_auto_and_hands_the_number_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_count, "usable_cpus", lambda: 3)
    monkeypatch.delenv("SERVE_WORKERS", raising=False)
    settings = Settings(_env_file=None, workers="auto", providers="cpu")
    assert settings.workers == "auto"
    with pytest.raises(RuntimeError, match="resolved by `python -m app`"):
        settings.worker_count  # noqa: B018 - the property raises
    chosen = choose_topology(settings)
    assert isinstance(chosen, Workers) and chosen.count == 3
    assert Settings(_env_file=None).worker_count == 3  # what each server process reads
    named = Settings(_env_file=None, workers=2)
    assert named.worker_count == 2
    for wrong in (0, "many"):
        with pytest.raises(ValidationError):
            Settings(_env_file=None, workers=wrong)


def test_a_server_with_auto_workers_starts_says_why_and_answers(
        start_server: StartServer, models_dir: Path, image_model: ModelUnderTest, digits: list[bytes]) -> None:
    expected = min(usable_cpus(), MAX_AUTO_WORKERS)
    server = start_server(models_dir, SERVE_WORKERS="auto", SERVE_PROVIDERS="cpu",
                          SERVE_MODELS=image_model.name).wait_ready()
    with server.client() as client:
        answer = client.post("/predict", files={"file": ("digit.png", digits[0], "image/png")})
        health = client.get("/health").json()
    assert answer.status_code == 200, answer.text
    assert_prediction(answer.json(), image_model.image_probabilities(digits[0]), image_model.labels, 5)
    assert len(health["workers"] or []) == (expected if expected > 1 else 0)
    assert f"SERVE_WORKERS=auto: {expected} worker(s), one per usable CPU: {usable_cpus()}" in server.log()
