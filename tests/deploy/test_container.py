"""A real build and run of the `cpu` image with podman, as a user would run it with Docker.

The image is built on a Debian bookworm + Python 3.11 base made locally with debootstrap (no registry can be
reached here; `scripts/local-base-image.sh`), run as its own non-root user with a read-only root filesystem on
127.0.0.1, asked for an image and a text prediction and its metrics, and over gRPC (tritonclient.grpc) for a
text one, stopped with SIGTERM (exit status 0), and removed. Needs root, podman, runc and debootstrap (`make
test` installs them as root); skipped otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc

from tests.serving.support import free_port, scrape, value

from .conftest import BASE_IMAGE, REPO_ROOT, build_image, bytes_over_base, run_tool, wait_ready

pytestmark = pytest.mark.container


@pytest.fixture(scope="module")
def image(podman: list[str]) -> Iterator[str]:
    """The `cpu` target built on the local base image; removed afterwards."""
    yield from build_image(podman, "cpu")


@pytest.fixture
def container(podman: list[str], image: str) -> Iterator[tuple[str, int, int]]:
    """The image running detached on free loopback ports; its id, HTTP port and gRPC port. Removed afterwards."""
    port, grpc_port = free_port(), free_port()
    started = run_tool([*podman, "run", "--detach", "--network", "host", "--read-only",
                        "--health-interval", "disable",  # no systemd timers here; the check is run by hand
                        "--env", "SERVE_HOST=127.0.0.1", "--env", f"SERVE_PORT={port}",
                        "--env", f"SERVE_GRPC_PORT={grpc_port}", image])
    container_id = started.stdout.strip().splitlines()[-1]
    yield container_id, port, grpc_port
    run_tool([*podman, "rm", "--force", container_id], check=False)


def test_the_image_serves_predictions_as_a_non_root_user_and_stops_cleanly(
    podman: list[str], image: str, container: tuple[str, int, int]
) -> None:
    container_id, port, grpc_port = container
    url = f"http://127.0.0.1:{port}"
    wait_ready(podman, container_id, url)

    with httpx.Client(base_url=url, timeout=30.0) as client:
        digit = (REPO_ROOT / "examples" / "digit-7.png").read_bytes()
        image_answer = client.post("/predict", params={"model": "mnist-cnn"},
                                   files={"file": ("digit-7.png", digit, "image/png")})
        assert image_answer.status_code == 200, image_answer.text
        assert image_answer.json()["model"] == "mnist-cnn" and image_answer.json()["label"] == "7"
        photo = (REPO_ROOT / "examples" / "chelsea.jpg").read_bytes()
        photo_answer = client.post("/predict", files={"file": ("chelsea.jpg", photo, "image/jpeg")})  # no model
        assert photo_answer.status_code == 200, photo_answer.text
        assert photo_answer.json()["model"] == "efficientnet-lite0-imagenet"
        assert photo_answer.json()["label"] in {"tabby", "tiger cat", "Egyptian cat"}
        text_answer = client.post("/predict", json={"text": "a gripping, beautifully acted film"})
        assert text_answer.status_code == 200, text_answer.text
        assert text_answer.json()["label"] == "positive"
        samples = scrape(client)
        for model in ("mnist-cnn", "efficientnet-lite0-imagenet", "sst2-textcnn"):
            assert value(samples, "modelserver_requests_total", protocol="http", route="/predict", model=model, status="200") == 1
        assert value(samples, "process_resident_memory_bytes") > 0

    # The Open Inference Protocol over gRPC, with tritonclient.grpc as it comes (the image serves it on 8001;
    # here on a free port, the container sharing the host's network).
    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    assert client.is_server_ready() and client.is_model_ready("sst2-textcnn")
    texts = triton_grpc.InferInput("text", [2], "BYTES")
    texts.set_data_from_numpy(np.array([b"a gripping, beautifully acted film", b"a tedious mess"], dtype=object))
    logits = client.infer("sst2-textcnn", [texts]).as_numpy("logits")
    labels = client.get_model_config("sst2-textcnn").config.parameters["labels"].string_value.split(",")
    assert [labels[row] for row in logits.argmax(axis=1)] == ["positive", "negative"]
    client.close()

    user = run_tool([*podman, "exec", container_id, "id", "-u"]).stdout.strip()
    assert user == "1000", f"the service runs as uid {user}"
    imports = run_tool([*podman, "exec", container_id, "python3", "-c",
                        "import importlib.util as u; print([m for m in ('torch', 'pip') if u.find_spec(m)])"])
    assert imports.stdout.strip() == "[]", f"the serving image has {imports.stdout.strip()}"
    health = run_tool([*podman, "healthcheck", "run", container_id], check=False)
    assert health.returncode == 0, f"HEALTHCHECK failed: {health.stdout}{health.stderr}"

    run_tool([*podman, "stop", "--time", "40", container_id], timeout=60)
    state = json.loads(run_tool([*podman, "inspect", container_id]).stdout)[0]["State"]
    assert state["ExitCode"] == 0, f"exit status after SIGTERM: {state}"


def test_the_serving_layers_stay_small(podman: list[str], image: str) -> None:
    """What the project adds to the base (virtualenv and models) stays small; the README quotes the sizes."""
    added_mb = bytes_over_base(podman, image) / 1e6
    print(f"image {image}: {added_mb:.0f} MB on top of {BASE_IMAGE}")
    assert added_mb < 400, f"the serving layers take {added_mb:.0f} MB"
