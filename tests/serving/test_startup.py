"""Broken models at start-up, and model files changed on disk while serving.

A corrupt, missing or changed (sha256 mismatch) model file fails that model alone, with a reason that names
no host path, while the others serve; SERVE_STRICT_STARTUP=true makes the process exit instead. A model file
replaced while the server runs does not change what it answers.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from uvicorn.config import STARTUP_FAILURE

from .conftest import CopyModels, StartServer
from .faulty_model import FAULTY, build_faulty_model, dim_digit
from .support import (
    ModelUnderTest,
    ServerProcess,
    assert_json_error,
    assert_prediction,
    b64,
    edit_config,
    exit_status,
    mnist_digits,
    model_states,
    wait_for_states,
)


def corrupt(version_folder: Path) -> None:
    """Garbage in place of the ONNX file, with config.json's sha256 updated: ONNX Runtime meets it."""
    garbage = b"this is not an ONNX model\n" * 64
    (version_folder / "model.onnx").write_bytes(garbage)
    edit_config(version_folder, sha256=hashlib.sha256(garbage).hexdigest())


def missing(version_folder: Path) -> None:
    (version_folder / "model.onnx").unlink()


def changed(version_folder: Path) -> None:
    """The ONNX file changed after config.json recorded its sha256."""
    with open(version_folder / "model.onnx", "ab") as onnx_file:
        onnx_file.write(b"\0")


BREAKAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "corrupt": (corrupt, "INVALID_PROTOBUF"),
    "missing": (missing, "No such file or directory"),
    "sha256-mismatch": (changed, "sha256"),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_a_broken_model_fails_alone(start_server: StartServer, copy_models: CopyModels,
                                    image_model: ModelUnderTest, text_model: ModelUnderTest, reviews: list[str],
                                    breakage: str) -> None:
    damage, reason = BREAKAGES[breakage]
    models = copy_models(image_model.name, text_model.name,
                         edit={image_model.name: lambda root: damage(root / image_model.directory.name)})
    server = start_server(models)
    wait_for_states(server, {image_model.name: "failed", text_model.name: "ready"})
    with server.client() as client:
        error = model_states(client)[image_model.name]["error"]
        assert reason in error, error
        assert str(models) not in error and "/tmp" not in error, f"a host path in {error!r}"
        ready = client.get("/health/ready")
        assert ready.status_code == 503 and reason in ready.json()["models"][image_model.name], ready.text
        refused = client.post("/predict", json={"image": b64(b"irrelevant")}, params={"model": image_model.name})
        assert_json_error(refused, 503, "model_not_ready")
        response = client.post("/predict", json={"text": reviews[0]})
        assert response.status_code == 200, response.text
        assert_prediction(response.json(), text_model.text_probabilities(reviews[0]), text_model.labels, 5)
    assert reason in server.log()


@pytest.mark.parametrize("breakage", [*BREAKAGES, "not-in-repository"])
def test_strict_startup_exits_on_a_broken_model(copy_models: CopyModels, tmp_path: Path,
                                                image_model: ModelUnderTest, text_model: ModelUnderTest,
                                                breakage: str) -> None:
    if breakage == "not-in-repository":
        models, selection, reason = copy_models(text_model.name), f"{text_model.name},{image_model.name}", "not in"
    else:
        damage, reason = BREAKAGES[breakage]
        models = copy_models(image_model.name, text_model.name,
                             edit={image_model.name: lambda root: damage(root / image_model.directory.name)})
        selection = f"{text_model.name},{image_model.name}"  # the broken one loads last
    status, log = exit_status(models, tmp_path / "strict", SERVE_MODELS=selection, SERVE_STRICT_STARTUP="true")
    assert status != 0, log
    assert f"cannot serve {image_model.name}" in log and reason in log, log
    assert "Application startup failed" in log, log


@pytest.mark.parametrize("shared_inference", ["false", "true"], ids=["own-sessions", "shared-inference"])
def test_strict_startup_exits_non_zero_with_several_workers(copy_models: CopyModels, tmp_path: Path,
                                                            image_model: ModelUnderTest, shared_inference: str) -> None:
    """uvicorn's supervisor stops once a worker fails to start, and would exit 0: a process manager that
    restarts on failure would then take the broken start-up for a clean stop."""
    damage, reason = BREAKAGES["corrupt"]
    models = copy_models(image_model.name, edit={image_model.name: lambda root: damage(root / image_model.directory.name)})
    status, log = exit_status(models, tmp_path / "strict", SERVE_STRICT_STARTUP="true", SERVE_WORKERS="2",
                              SERVE_SHARED_INFERENCE=shared_inference)
    assert status == STARTUP_FAILURE, log
    assert f"cannot serve {image_model.name}" in log and reason in log, log


def test_strict_startup_serves_when_every_model_loads(start_server: StartServer, models_dir: Path,
                                                      text_model: ModelUnderTest, reviews: list[str]) -> None:
    """Strict start-up answers HTTP only once every model is ready."""
    server = start_server(models_dir, SERVE_MODELS=text_model.name, SERVE_STRICT_STARTUP="true")
    with server.client() as client:
        assert client.get("/health/ready").status_code == 200  # at once: no waiting
        response = client.post("/predict", json={"text": reviews[1]})
        assert response.status_code == 200, response.text


def test_closing_routes_without_a_key_is_refused(models_dir: Path, tmp_path: Path) -> None:
    status, log = exit_status(models_dir, tmp_path / "no-key", SERVE_PUBLIC_METRICS="false")
    assert status != 0, log
    assert "SERVE_PUBLIC_METRICS=false needs SERVE_API_KEY, SERVE_API_KEYS or SERVE_API_KEYS_FILE" in log, log


# Entries that uvicorn's command line could be pointed at, and what each says as it refuses.
UVICORN_ENTRIES = {
    "app.__main__:create_served_app": "run `python -m app`",
    "app.transport.http.application:create_app": "missing 2 required positional arguments: 'settings' and 'role'",
}


@pytest.mark.parametrize("entry", list(UVICORN_ENTRIES))
@pytest.mark.parametrize("settings", [{}, {"SERVE_WORKERS": "2"}, {"SERVE_SHARED_INFERENCE": "true"}],
                         ids=["one-process", "workers", "shared-inference"])
def test_the_app_started_by_uvicorns_command_line_refuses_to_start(models_dir: Path, tmp_path: Path, entry: str,
                                                                    settings: dict[str, str]) -> None:
    """Only `python -m app` serves the settings as given: uvicorn's command line would serve one process without
    the request head limits, the arrival stamps and the SIGTERM intake stop."""
    env = ServerProcess(models_dir, tmp_path, settings).environment()
    done = subprocess.run([sys.executable, "-m", "uvicorn", "--factory", entry, "--port", "0"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    log = done.stdout + done.stderr
    assert done.returncode == STARTUP_FAILURE, log
    assert UVICORN_ENTRIES[entry] in log, log


@pytest.mark.parametrize("how", ["overwritten", "renamed-over"])
def test_a_model_file_replaced_on_disk_changes_nothing_served(
        start_server: StartServer, copy_models: CopyModels, tmp_path: Path, image_model: ModelUnderTest,
        how: str) -> None:
    digits = [dim_digit(pixels) for pixels in mnist_digits(8)]  # inputs both models answer
    models = copy_models(image_model.name)
    version_folder = models / image_model.name / image_model.directory.name
    server = start_server(models, SERVE_MODELS=image_model.name).wait_ready()

    # Another model's weights, with config.json updated to match, as a careless deploy would leave them.
    other = build_faulty_model(tmp_path / "other", image_model) / FAULTY / "1" / "model.onnx"
    target = version_folder / "model.onnx"
    if how == "overwritten":
        target.write_bytes(other.read_bytes())
    else:
        shutil.copy(other, version_folder / "model.onnx.new")
        (version_folder / "model.onnx.new").replace(target)
    edit_config(version_folder, sha256=hashlib.sha256(other.read_bytes()).hexdigest())

    with server.client() as client:
        for digit in digits:
            response = client.post("/predict", json={"image": b64(digit)})
            assert response.status_code == 200, response.text
            assert_prediction(response.json(), image_model.image_probabilities(digit), image_model.labels, 5)
        assert client.get("/health/ready").status_code == 200

    # The replacement is a different model: a server started on it now answers differently.
    fresh = start_server(models, SERVE_MODELS=image_model.name).wait_ready()
    with fresh.client() as client:
        answers = [client.post("/predict", json={"image": b64(digit), "top_k": 1}).json() for digit in digits]
    expected = [image_model.labels[int(image_model.image_probabilities(digit).argmax())] for digit in digits]
    assert [answer["label"] for answer in answers] != expected
