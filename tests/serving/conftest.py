"""Fixtures of the serving end-to-end tests: the models under test, real server processes and real data.

The models under test are named here and only here: the bundled default models in `models/`. Tests that
need to alter a model copy its folder into a temporary models dir first (`copy_models`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import httpx
import pytest

from .support import REPO_ROOT, ModelUnderTest, ServerProcess, mnist_digits, png_bytes

MODELS_DIR = REPO_ROOT / "models"
IMAGE_MODEL = "mnist-cnn"
TEXT_MODEL = "sst2-textcnn"

# Limits of the shared server, set low enough for the tests to cross them cheaply.
MAX_BODY_BYTES = 1024 * 1024
MAX_IMAGE_PIXELS = 250_000
MAX_ITEMS = 64
# Worker processes of the shared server: `make test` runs the tests that use it (marked `shared_server`) with
# 1, then again with 2, and with 2 that hand their batches to an inference process (SERVE_SHARED_INFERENCE).
SHARED_SERVER_WORKERS = int(os.environ.get("MODELSERVER_TEST_WORKERS", "1"))
SHARED_SERVER_SHARED_INFERENCE = os.environ.get("MODELSERVER_TEST_SHARED_INFERENCE", "false") == "true"

# Movie-review-like sentences, positive and negative, short and long.
REVIEWS = [
    "A gripping, beautifully acted film that stays with you long after the credits roll.",
    "A tedious mess with wooden dialogue and a plot that goes nowhere.",
    "I loved every minute of it.",
    "The worst two hours I have spent in a cinema this year.",
    "Charming, funny and surprisingly moving.",
    "The director seems to have no idea what story he wants to tell.",
    "An instant classic: smart, warm and endlessly inventive.",
    "Flat characters, lazy jokes and a soundtrack that never stops shouting.",
    "The performances are terrific, especially the two leads.",
    "Boring.",
    "It is overlong and self-indulgent, but the final act almost redeems it.",
    "A quiet, thoughtful drama that trusts its audience.",
    "Nothing in this film makes sense, and nobody involved seems to care.",
    "One of the most exhilarating action movies in years.",
    "The script is clumsy and the pacing is glacial.",
    "A heartfelt story told with real wit and style.",
    "I wanted to like it, yet it left me cold.",
    "Visually stunning and emotionally rich.",
    "The sequel nobody asked for, and it shows.",
    "Funny, sharp and full of life, it is a joy from start to finish.",
]


@pytest.fixture(scope="session")
def models_dir() -> Path:
    return MODELS_DIR


@pytest.fixture(scope="session")
def image_model(models_dir: Path) -> ModelUnderTest:
    model = ModelUnderTest.load(models_dir, IMAGE_MODEL)
    assert model.config.task == "image"
    return model


@pytest.fixture(scope="session")
def text_model(models_dir: Path) -> ModelUnderTest:
    model = ModelUnderTest.load(models_dir, TEXT_MODEL)
    assert model.config.task == "text"
    return model


@pytest.fixture(scope="session")
def digits() -> list[bytes]:
    """256 distinct real handwritten digits as PNG files."""
    return [png_bytes(pixels) for pixels in mnist_digits(256)]


@pytest.fixture(scope="session")
def reviews() -> list[str]:
    return list(REVIEWS)


def start_limited_server(workdir: Path) -> ServerProcess:
    """A server of both bundled models, ready, with the low request limits above, and gRPC (also used by
    tests/fuzz)."""
    process = ServerProcess(MODELS_DIR, workdir, grpc=True, env={
        "SERVE_MODELS": f"{IMAGE_MODEL},{TEXT_MODEL}",
        "SERVE_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
        "SERVE_MAX_IMAGE_PIXELS": str(MAX_IMAGE_PIXELS),
        "SERVE_MAX_ITEMS_PER_REQUEST": str(MAX_ITEMS),
        "SERVE_WORKERS": str(SHARED_SERVER_WORKERS),
        "SERVE_SHARED_INFERENCE": str(SHARED_SERVER_SHARED_INFERENCE).lower(),
    })
    return process.start().wait_ready()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests that use the shared server `shared_server`, to run them again against several workers."""
    for item in items:
        if {"server", "http"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.shared_server)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The shared server: both models, ready, with low request limits."""
    process = start_limited_server(tmp_path_factory.mktemp("server"))
    yield process
    process.stop()


@pytest.fixture(scope="session")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


@pytest.fixture(autouse=True)
def _shared_server_alive(request: pytest.FixtureRequest) -> Iterator[None]:
    """Say so plainly when the shared server has died, instead of failing every later test obscurely."""
    uses_shared = {"server", "http"} & set(request.fixturenames)
    process: ServerProcess | None = request.getfixturevalue("server") if uses_shared else None

    def check(when: str) -> None:
        if process is not None and process.process is not None and process.process.poll() is not None:
            pytest.fail(f"the shared server exited (status {process.process.returncode}) {when}\n"
                        f"--- server log ---\n{process.log()}")

    check("before this test")
    yield
    check("during this test")


StartServer = Callable[..., ServerProcess]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """Start extra servers for one test (`start_server(models_dir, SERVE_X=..., grpc=True)`); all stopped at the
    end."""
    started: list[ServerProcess] = []

    def start(models: Path, *, grpc: bool = False, **env: str) -> ServerProcess:
        process = ServerProcess(models, tmp_path / f"server-{len(started)}", env, grpc=grpc)
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()


CopyModels = Callable[..., Path]


@pytest.fixture
def copy_models(tmp_path: Path, models_dir: Path) -> CopyModels:
    """Copy the named model folders into a fresh models dir under tmp_path, to alter them."""

    def copy(*names: str, edit: Mapping[str, Callable[[Path], None]] | None = None) -> Path:
        target = tmp_path / "models"
        target.mkdir(exist_ok=True)
        for name in names:
            shutil.copytree(models_dir / name, target / name)
        for name, change in (edit or {}).items():
            change(target / name)
        return target

    return copy
