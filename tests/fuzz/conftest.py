"""Fixtures of the fuzz, property and overload tests.

Scale is set by environment variables, so the same tests run quickly in `make test` and at length from
`scripts/fuzz_long.sh`:

- `FUZZ_PROFILE`: `quick` (default) or `long`, the hypothesis examples per property test;
- `FUZZ_MAX_EXAMPLES`, `FUZZ_MIN_REQUESTS`: schemathesis examples per operation, and the least number of
  requests a run must send (see test_schemathesis.py);
- `OVERLOAD_SECONDS`, `OVERLOAD_FACTOR`: how long and how far past the sustainable rate to drive the server;
- `FUZZ_REPORT_DIR`: where the runs write their figures as JSON (not written when unset).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, settings

# The fuzzed server is the serving suite's: both bundled models, with low limits the fuzzers cross cheaply.
from tests.serving.conftest import IMAGE_MODEL, MODELS_DIR, TEXT_MODEL, start_limited_server
from tests.serving.support import ModelUnderTest, ServerProcess

for name, examples in (("quick", 150), ("long", 3000)):
    settings.register_profile(name, max_examples=examples, deadline=None, database=None,
                              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("FUZZ_PROFILE", "quick"))


def env_number(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def write_report(name: str, figures: dict[str, Any]) -> None:
    """Print the figures of a run, and keep them as JSON under FUZZ_REPORT_DIR when it is set."""
    print(f"\n{name}: {json.dumps(figures, sort_keys=True)}")
    directory = os.environ.get("FUZZ_REPORT_DIR")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / f"{name}.json").write_text(json.dumps(figures, indent=2, sort_keys=True))


@pytest.fixture(scope="session")
def image_model() -> ModelUnderTest:
    return ModelUnderTest.load(MODELS_DIR, IMAGE_MODEL)


@pytest.fixture(scope="session")
def text_model() -> ModelUnderTest:
    return ModelUnderTest.load(MODELS_DIR, TEXT_MODEL)


@pytest.fixture(scope="session")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real server with both bundled models and low limits, shared by the fuzz tests."""
    process = start_limited_server(tmp_path_factory.mktemp("fuzz-server"))
    yield process
    process.stop()


@pytest.fixture(scope="session")
def fuzz_http(fuzz_server: ServerProcess) -> Iterator[httpx.Client]:
    with fuzz_server.client(timeout=30.0) as client:
        yield client


def assert_healthy(server: ServerProcess) -> None:
    """The server process runs, is ready, and still answers a real prediction."""
    assert server.process is not None and server.process.poll() is None, f"server exited\n{server.log()}"
    with server.client(timeout=10.0) as client:
        assert client.get("/health/ready").status_code == 200, server.log()
        answer = client.post("/predict", json={"text": "a fine film"})
        assert answer.status_code == 200, answer.text
