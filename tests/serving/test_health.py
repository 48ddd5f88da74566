"""Liveness and readiness: not ready while warming up, never ready while a configured model is missing or
broken, yet the models that did load still serve."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import onnxruntime as ort
import pytest

from .conftest import CopyModels, StartServer
from .support import (
    ModelUnderTest,
    assert_json_error,
    assert_prediction,
    b64,
    edit_config,
    model_states,
    wait_for_states,
    warm_up_runs_for,
)

# How long the slow warm-up should take, so the test can look at the server while it is not ready.
WARM_UP_SECONDS = 2.5


def test_not_ready_until_warmed_up(start_server: StartServer, models_dir: Path, image_model: ModelUnderTest,
                                   digits: list[bytes]) -> None:
    runs = warm_up_runs_for(image_model, WARM_UP_SECONDS)
    server = start_server(models_dir, SERVE_MODELS=image_model.name, SERVE_WARMUP_RUNS=str(runs))
    with server.client() as client:
        # Live as soon as HTTP answers, while the model is still loading or warming up.
        assert client.get("/health/live").status_code == 200
        ready = client.get("/health/ready")
        assert ready.status_code == 503, ready.text
        assert ready.json()["status"] == "not_ready"
        assert image_model.name in ready.json()["models"]
        health = client.get("/health").json()
        assert health["live"] is True and health["ready"] is False and health["status"] == "not_ready"
        assert model_states(client)[image_model.name]["state"] in {"loading", "warming"}
        assert client.get("/v2/health/ready").status_code == 503
        early = client.post("/predict", files={"file": ("d.png", digits[0], "image/png")})
        assert_json_error(early, 503, "model_not_ready")
        assert early.headers.get("retry-after", "").isdigit()
        assert "ready: serving" not in server.log()

        server.wait_ready()
        # The console says so too, in one line naming the models and the address.
        assert f"INFO app.models.registry [-]: ready: serving {image_model.name} on {server.url}\n" in server.log()

        status = model_states(client)[image_model.name]
        assert status["state"] == "ready" and status["error"] is None
        assert status["provider"] == "CPUExecutionProvider"
        assert status["version"] == image_model.config.version
        assert client.get("/health").json()["status"] == "ready"
        assert client.get("/v2/health/ready").status_code == 200
        response = client.post("/predict", files={"file": ("d.png", digits[0], "image/png")})
        assert response.status_code == 200, response.text
        assert_prediction(response.json(), image_model.image_probabilities(digits[0]), image_model.labels, 5)


def test_missing_configured_model_keeps_service_unready(start_server: StartServer, models_dir: Path,
                                                        image_model: ModelUnderTest, digits: list[bytes]) -> None:
    missing = "does-not-exist"
    server = start_server(models_dir, SERVE_MODELS=f"{image_model.name},{missing}")
    wait_for_states(server, {image_model.name: "ready", missing: "failed"})
    with server.client() as client:
        for _ in range(2):  # before and after serving traffic
            ready = client.get("/health/ready")
            assert ready.status_code == 503, ready.text
            assert list(ready.json()["models"]) == [missing]
            assert missing in ready.json()["models"][missing]
            health = client.get("/health").json()
            assert health["ready"] is False
            status = model_states(client)[missing]
            assert status["state"] == "failed" and missing in status["error"]
            assert client.get("/v2/health/ready").status_code == 503
            assert "ready: serving" not in server.log()

            response = client.post("/predict", json={"image": b64(digits[1])})
            assert response.status_code == 200, response.text
            assert_prediction(response.json(), image_model.image_probabilities(digits[1]), image_model.labels, 5)


def test_cuda_asked_for_but_unusable_fails_loudly(start_server: StartServer, models_dir: Path,
                                                  image_model: ModelUnderTest, digits: list[bytes]) -> None:
    """SERVE_PROVIDERS=cuda never falls back to the CPU in silence: the model fails and says why.

    Where CUDA works (onnxruntime-gpu and a GPU) the model must be ready on CUDA instead.
    """
    server = start_server(models_dir, SERVE_MODELS=image_model.name, SERVE_PROVIDERS="cuda")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        wait_for_states(server, {image_model.name: "ready"})
        with server.client() as client:
            assert model_states(client)[image_model.name]["provider"] == "CUDAExecutionProvider"
        return
    wait_for_states(server, {image_model.name: "failed"})
    with server.client() as client:
        status = model_states(client)[image_model.name]
        assert "CUDAExecutionProvider was asked for" in status["error"], status
        assert status["provider"] is None, status
        assert client.get("/health/ready").status_code == 503
        response = client.post("/predict", json={"image": b64(digits[0])})
        assert response.status_code == 503, response.text


def test_sha256_mismatch_fails_that_model(start_server: StartServer, copy_models: CopyModels, image_model: ModelUnderTest,
                                          text_model: ModelUnderTest, reviews: list[str]) -> None:
    def wrong_checksum(model_root: Path) -> None:
        edit_config(model_root / image_model.directory.name, sha256=hashlib.sha256(b"some other model").hexdigest())

    models = copy_models(image_model.name, text_model.name, edit={image_model.name: wrong_checksum})
    server = start_server(models)
    wait_for_states(server, {image_model.name: "failed", text_model.name: "ready"})
    with server.client() as client:
        status = model_states(client)[image_model.name]
        assert "sha256" in status["error"], status
        ready = client.get("/health/ready")
        assert ready.status_code == 503, ready.text
        assert "sha256" in ready.json()["models"][image_model.name]
        assert client.get("/metrics").status_code == 200
        refused = client.post("/predict", json={"image": b64(b"irrelevant")}, params={"model": image_model.name})
        assert_json_error(refused, 503, "model_not_ready")
        # The model that loaded still answers.
        response = client.post("/predict", json={"text": reviews[0]})
        assert response.status_code == 200, response.text
        assert_prediction(response.json(), text_model.text_probabilities(reviews[0]), text_model.labels, 5)


@pytest.mark.parametrize("layout", ["empty", "absent"])
def test_no_models_is_never_ready(start_server: StartServer, tmp_path: Path, layout: str) -> None:
    models = tmp_path / "no-models"
    if layout == "empty":
        models.mkdir()
    server = start_server(models)
    with server.client() as client:
        for _ in range(3):
            assert client.get("/health/live").status_code == 200
            ready = client.get("/health/ready")
            assert ready.status_code == 503, ready.text
            assert ready.json()["status"] == "not_ready" and ready.json()["error"]
            health = client.get("/health").json()
            assert health["ready"] is False
            assert all(item["state"] == "failed" for item in health["models"]), health
            assert client.get("/v2/health/ready").status_code == 503
            assert_json_error(client.post("/predict", json={"text": "a fine film"}), 404, "model_not_found")
            time.sleep(0.2)
