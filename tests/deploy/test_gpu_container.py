"""A real build of the `gpu` image with podman, checked as far as a machine without a GPU can check it.

The image is built on the same local Debian bookworm + Python 3.11 base as the `cpu` one (no registry can be
reached here), with CUDA and cuDNN from NVIDIA's pip wheels. Inside it: ONNX Runtime has the CUDA provider;
once the service's preload has run, the CUDA provider library resolves every library it needs but the driver's
libcuda.so.1, which the NVIDIA Container Toolkit mounts on a GPU node; with no GPU, `SERVE_PROVIDERS=cuda`
keeps the service unready with the reason, and `auto` serves on the CPU with the fall-back in `/health`.
Needs root, podman, runc and debootstrap (`make test` installs them as root); skipped otherwise.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.serving.support import free_port

from .conftest import BASE_IMAGE, REPO_ROOT, build, build_image, bytes_over_base, run_tool, wait_ready

pytestmark = pytest.mark.container

CUDA_STAGE = "localhost/onnx-classifier-serving-test:gpu-cuda"

# Run inside the image, as the service runs: the service's own preload, then `ldd` on the CUDA provider library
# and on every library in the folders the preload loaded from (cuDNN's engines among them: ONNX Runtime and
# cuDNN open those at run time), with those folders as the library path (the dynamic loader of the serving
# process finds the libraries already loaded by their names; `ldd` runs in a new process, so it is given
# their folders).
INSPECT = """
import json, os, pathlib, subprocess, onnxruntime
from app.models.runtime import preload_cuda_libraries
preload_cuda_libraries()
loaded = {line.split()[-1] for line in open("/proc/self/maps") if "/nvidia/" in line and ".so" in line}
folders = sorted({os.path.dirname(path) for path in loaded})
provider = pathlib.Path(onnxruntime.__file__).parent / "capi" / "libonnxruntime_providers_cuda.so"
libraries = [str(provider), *sorted(str(p) for folder in folders for p in pathlib.Path(folder).glob("*.so*"))]
ldd = {library: subprocess.run(["ldd", library], capture_output=True, text=True, check=True,
                               env={**os.environ, "LD_LIBRARY_PATH": ":".join(folders)}).stdout
       for library in libraries}
print(json.dumps({"providers": onnxruntime.get_available_providers(), "loaded": sorted(loaded), "ldd": ldd}))
"""


@pytest.fixture(scope="module")
def image(podman: list[str]) -> Iterator[str]:
    """The `gpu` target built on the local base image; removed afterwards. Its `gpu-cuda` stage (the CUDA and
    cuDNN wheels installed, about 3 GB) is kept under a tag of its own, so the next run builds only what the
    project adds; the downloaded wheels stay in the build's cache mount."""
    build(podman, "gpu-cuda", CUDA_STAGE)
    yield from build_image(podman, "gpu")


@pytest.fixture(scope="module")
def inspected(podman: list[str], image: str) -> dict:
    """What INSPECT reports from inside the image, run read-only as its own user, with no network."""
    result = run_tool([*podman, "run", "--rm", "--read-only", "--network", "none", "--health-interval", "disable",
                       image, "python3", "-c", INSPECT])
    return json.loads(result.stdout.strip().splitlines()[-1])


def start(podman: list[str], image: str, providers: str) -> tuple[str, str]:
    """The image serving mnist-cnn with SERVE_PROVIDERS=`providers`, detached on free loopback ports (HTTP and
    gRPC); its id and HTTP address."""
    port = free_port()
    started = run_tool([*podman, "run", "--detach", "--network", "host", "--read-only",
                        "--health-interval", "disable", "--env", "SERVE_HOST=127.0.0.1", "--env", f"SERVE_PORT={port}",
                        "--env", f"SERVE_GRPC_PORT={free_port()}", "--env", "SERVE_MODELS=mnist-cnn",
                        "--env", f"SERVE_PROVIDERS={providers}", image])
    return started.stdout.strip().splitlines()[-1], f"http://127.0.0.1:{port}"


def logs(podman: list[str], container_id: str) -> str:
    result = run_tool([*podman, "logs", container_id], check=False)
    return result.stdout + result.stderr


def test_onnx_runtime_in_the_image_has_the_cuda_provider(inspected: dict) -> None:
    assert "CUDAExecutionProvider" in inspected["providers"], inspected["providers"]


def test_the_cuda_provider_library_finds_everything_but_the_driver(inspected: dict) -> None:
    """libcuda.so.1 comes with the driver (the NVIDIA Container Toolkit mounts it); everything else is in the
    image: cuDNN, cuBLAS, the CUDA runtime, cuFFT and cuRAND, loaded from the nvidia wheels."""
    provider = next(name for name in inspected["ldd"] if name.endswith("libonnxruntime_providers_cuda.so"))
    needed = {line.split()[0] for line in inspected["ldd"][provider].splitlines() if "=>" in line}
    assert {"libcublas.so.13", "libcudart.so.13", "libcuda.so.1"} <= needed, inspected["ldd"][provider]
    missing = {(library.rsplit("/", 1)[-1], line.split()[0]) for library, output in inspected["ldd"].items()
               for line in output.splitlines() if "not found" in line}
    assert {name for _, name in missing} == {"libcuda.so.1"}, f"not found (library, what it needs): {missing}"
    names = {path.rsplit("/", 1)[-1] for path in inspected["loaded"]}
    for library in ("libcudnn.so.9", "libcublas.so.13", "libcublasLt.so.13", "libcudart.so.13"):
        assert library in names, f"{library} was not preloaded: {sorted(names)}"
    assert all(path.startswith("/opt/venv/") for path in inspected["loaded"]), inspected["loaded"]


def test_cuda_without_a_gpu_keeps_the_service_unready_with_the_reason(podman: list[str], image: str) -> None:
    container_id, url = start(podman, image, "cuda")
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=url, timeout=5.0) as client:
            while True:
                try:
                    models = {model["name"]: model for model in client.get("/health").json()["models"]}
                    if models["mnist-cnn"]["state"] == "failed":
                        break
                except (httpx.TransportError, KeyError, ValueError):
                    pass
                assert time.monotonic() < deadline, f"mnist-cnn did not fail in time\n{logs(podman, container_id)}"
                time.sleep(0.25)
            status = models["mnist-cnn"]
            assert status["provider"] is None, status
            assert "CUDAExecutionProvider was asked for" in status["error"], status
            assert "could only be created on CPUExecutionProvider" in status["error"], status
            ready = client.get("/health/ready")
            assert ready.status_code == 503, ready.text
            assert "CUDAExecutionProvider was asked for" in ready.json()["models"]["mnist-cnn"], ready.text
        log = logs(podman, container_id)
        assert "preloaded CUDA and cuDNN" in log, log
        assert "libcuda.so.1" in log, log  # ONNX Runtime's own error names the missing driver library
    finally:
        run_tool([*podman, "rm", "--force", container_id], check=False)


def test_auto_without_a_gpu_serves_on_the_cpu_and_shows_the_fall_back(podman: list[str], image: str) -> None:
    container_id, url = start(podman, image, "auto")
    try:
        wait_ready(podman, container_id, url)
        with httpx.Client(base_url=url, timeout=30.0) as client:
            models = {model["name"]: model for model in client.get("/health").json()["models"]}
            assert models["mnist-cnn"]["provider"] == "CPUExecutionProvider", models
            digit = (REPO_ROOT / "examples" / "digit-7.png").read_bytes()
            answer = client.post("/predict", files={"file": ("digit-7.png", digit, "image/png")})
            assert answer.status_code == 200, answer.text
            assert answer.json()["label"] == "7", answer.json()
        log = logs(podman, container_id)
        assert "asked for CUDAExecutionProvider but the session runs on CPUExecutionProvider" in log, log
        user = run_tool([*podman, "exec", container_id, "id", "-u"]).stdout.strip()
        assert user == "1000", f"the service runs as uid {user}"
        imports = run_tool([*podman, "exec", container_id, "python3", "-c",
                            "import importlib.util as u; print([m for m in ('torch', 'pip') if u.find_spec(m)])"])
        assert imports.stdout.strip() == "[]", f"the serving image has {imports.stdout.strip()}"
        environment = run_tool([*podman, "exec", container_id, "env"]).stdout.splitlines()
        for setting in ("NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_DRIVER_CAPABILITIES=compute,utility"):
            assert setting in environment, f"{setting} is not in the image's environment"
    finally:
        run_tool([*podman, "rm", "--force", container_id], check=False)


def test_the_image_size(podman: list[str], image: str) -> None:
    """What the gpu image adds to the base, for the README (mostly NVIDIA's libraries); a bound against growth."""
    added_gb = bytes_over_base(podman, image) / 1e9
    print(f"image {image}: {added_gb:.2f} GB on top of {BASE_IMAGE}")
    assert added_gb < 3.5, f"the gpu image's layers take {added_gb:.2f} GB"
