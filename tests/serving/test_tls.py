"""HTTPS served by the process itself (SERVE_TLS_CERT_FILE, SERVE_TLS_KEY_FILE): a certificate the test makes,
a client that verifies it, in one process and with several workers, and the container's health check over it."""

from __future__ import annotations

import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import tritonclient.grpc as triton_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from uvicorn.config import STARTUP_FAILURE

from .support import ModelUnderTest, ServerProcess, assert_prediction, exit_status


class HttpsServer(ServerProcess):
    """A server with TLS on; its clients trust the test's own certificate and nothing else."""

    def __init__(self, models_dir: Path, workdir: Path, cert: Path, key: Path, **env: str) -> None:
        super().__init__(models_dir, workdir, {"SERVE_TLS_CERT_FILE": str(cert), "SERVE_TLS_KEY_FILE": str(key),
                                               **env}, grpc=True)
        self.cert = cert

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def client(self, **kwargs: Any) -> httpx.Client:
        return super().client(verify=ssl.create_default_context(cafile=self.cert), **kwargs)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made with openssl."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.fixture(scope="module", params=["1", "2"], ids=["one-process", "two-workers"])
def https_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, models_dir: Path,
                 image_model: ModelUnderTest, certificate: tuple[Path, Path]) -> Iterator[HttpsServer]:
    cert, key = certificate
    server = HttpsServer(models_dir, tmp_path_factory.mktemp("https"), cert, key,
                         SERVE_MODELS=image_model.name, SERVE_WORKERS=request.param)
    server.start().wait_ready()
    yield server
    server.stop()


def test_serves_over_https_to_a_verifying_client(https_server: HttpsServer, image_model: ModelUnderTest,
                                                 digits: list[bytes]) -> None:
    with https_server.client() as client:
        assert client.get("/health/ready").status_code == 200
        response = client.post("/predict", files={"file": ("d.png", digits[0], "image/png")})
    assert response.status_code == 200, response.text
    assert_prediction(response.json(), image_model.image_probabilities(digits[0]), image_model.labels, top_k=5)
    assert f"ready: serving {image_model.name} on https://127.0.0.1:{https_server.port}" in https_server.log()


def test_plain_http_and_untrusting_clients_get_no_answer(https_server: HttpsServer) -> None:
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{https_server.port}/health/live", timeout=5.0)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{https_server.url}/health/live", timeout=5.0)  # the default trust store: no such CA


def test_grpc_is_served_over_tls_too(https_server: HttpsServer, image_model: ModelUnderTest) -> None:
    """The gRPC port takes the same certificate: a verifying tritonclient.grpc is answered, plaintext is not."""
    client = triton_grpc.InferenceServerClient(https_server.grpc_url, ssl=True,
                                               root_certificates=str(https_server.cert))
    assert client.is_server_ready() and client.is_model_ready(image_model.name)
    client.close()
    with grpc.insecure_channel(https_server.grpc_url) as channel, pytest.raises(grpc.RpcError) as caught:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_container_healthcheck_over_https(https_server: HttpsServer) -> None:
    check = subprocess.run([sys.executable, "-m", "app.healthcheck"], env=https_server.environment(),
                           cwd=https_server.workdir, capture_output=True, timeout=30, check=False)
    assert check.returncode == 0, check


def test_one_tls_file_alone_is_a_settings_error(models_dir: Path, tmp_path: Path,
                                                certificate: tuple[Path, Path]) -> None:
    status, log = exit_status(models_dir, tmp_path / "half", SERVE_TLS_CERT_FILE=str(certificate[0]))
    assert status != 0, log
    assert "SERVE_TLS_CERT_FILE and SERVE_TLS_KEY_FILE go together" in log, log


@pytest.mark.parametrize("workers", ["1", "2"], ids=["one-process", "two-workers"])
def test_an_unreadable_key_stops_start_up(models_dir: Path, tmp_path: Path, certificate: tuple[Path, Path],
                                          workers: str) -> None:
    missing = tmp_path / "no-such-key.pem"
    status, log = exit_status(models_dir, tmp_path / "unreadable", SERVE_TLS_CERT_FILE=str(certificate[0]),
                              SERVE_TLS_KEY_FILE=str(missing), SERVE_WORKERS=workers)
    assert status == STARTUP_FAILURE, log
    assert f"cannot serve HTTPS with SERVE_TLS_CERT_FILE={certificate[0]} and SERVE_TLS_KEY_FILE={missing}" in log
    assert "Traceback" not in log, log
