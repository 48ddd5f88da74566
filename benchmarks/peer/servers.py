"""The compared servers: each started as a subprocess on a free 127.0.0.1 port, pinned to the server CPUs and
stopped after its cells; and what the service reports about itself (/metrics means over a window, its batch caps).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from loadgen import http_get

from app.settings import Settings

from . import REPO
from .cases import Case

SERVERS = ("trivial", "naive-def", "naive-async", "service", "service-w2", "service-w2-shared", "service-w4",
           "service-w4-shared", "service-auto", "service-baseline", "service-v2-json", "service-v2-binary",
           "service-grpc")
NAIVE = ("naive-def", "naive-async")
# The service in one process, with SERVE_WORKERS=2 or 4 (whole-service workers on one port), with 2 or 4
# workers feeding one inference process (SERVE_SHARED_INFERENCE), and with SERVE_WORKERS=auto (one per server
# CPU): all but the first are not in the default run; name them in --servers to compare, with --server-cpus
# giving the workers more than one CPU (the 4-worker ones are for GPU hosts: benchmarks/gpu/run.py).
SERVICES = {"service": {}, "service-w2": {"SERVE_WORKERS": "2"},
            "service-w2-shared": {"SERVE_WORKERS": "2", "SERVE_SHARED_INFERENCE": "true"},
            "service-w4": {"SERVE_WORKERS": "4"},
            "service-w4-shared": {"SERVE_WORKERS": "4", "SERVE_SHARED_INFERENCE": "true"},
            "service-auto": {"SERVE_WORKERS": "auto"}, "service-baseline": {},
            "service-v2-json": {}, "service-v2-binary": {}, "service-grpc": {}}
# `service-baseline` is the service of another checkout (--baseline DIR), to measure a change side by side.
# `service-v2-json`, `service-v2-binary` and `service-grpc` are the service loaded through the Open Inference
# Protocol v2 instead of /predict (peer/protocols.py); `service-grpc` also serves gRPC on a port of its own.
DEFAULT_SERVERS = ("trivial", "naive-def", "naive-async", "service")



METRIC_LINE = re.compile(r'^(modelserver_\w+)\{model="([^"]*)"\}\s+(\S+)$')
SERVICE_SERIES = {  # per-model (sum, count) series of /metrics -> the name of their mean over a cell
    "batch_size": "mean_batch_size",
    "preprocess_duration_seconds": "preprocess_s_per_batch",
    "inference_duration_seconds": "inference_s_per_batch",
    "queue_wait_seconds": "queue_wait_s_per_request",
}



def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])



class Server:
    """One server subprocess, pinned to the server CPUs."""

    def __init__(self, name: str, case: Case, model_dir: Path, args: argparse.Namespace, cpus: set[int],
                 log: Path) -> None:
        self.name, self.case, self.log = name, case, log
        self.port = free_port()
        self.grpc_port = free_port() if name == "service-grpc" else None
        python = sys.executable
        bench = REPO / "benchmarks"
        self.env = {**os.environ, **service_env(args, model_dir.parent.parent, case.model, self.port),
                    **SERVICES.get(name, {})}
        if name in SERVICES and name != "service-baseline":  # the service under test (--service-env)
            self.env |= dict(item.split("=", 1) for item in args.service_env)
        if self.grpc_port is not None:
            self.env["SERVE_GRPC_PORT"] = str(self.grpc_port)
        if name == "trivial":
            self.command = [python, str(bench / "trivial_app.py"), "--port", str(self.port)]
            self.ready_path = "/ping"
        elif name in NAIVE:
            self.command = [python, str(bench / "naive_app.py"), "--model-dir", str(model_dir),
                            "--variant", name.removeprefix("naive-"), "--port", str(self.port)]
            self.ready_path = "/ping"
        else:
            self.command = [python, "-m", "app"]
            self.ready_path = "/health/ready"
        self.cwd = REPO
        if name == "service-baseline":
            self.cwd = args.baseline
            self.env["PYTHONPATH"] = str(args.baseline)
        if shutil.which("taskset"):
            self.command = ["taskset", "-c", ",".join(map(str, sorted(cpus))), *self.command]
        self.cpus = cpus
        self.process: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        with self.log.open("wb") as log_file:
            self.process = subprocess.Popen(self.command, cwd=self.cwd, env=self.env, stdout=log_file,
                                            stderr=subprocess.STDOUT)
        if not shutil.which("taskset"):  # pinned before it starts any thread (taskset pins before exec)
            os.sched_setaffinity(self.process.pid, self.cpus)

    async def start(self, timeout_s: float = 300) -> float:
        """Start and wait until the ready path answers 200; returns the seconds it took."""
        started = time.perf_counter()
        self.spawn()
        assert self.process is not None
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode} before it was ready; "
                                   f"its log:\n{self.log.read_text()[-3000:]}")
            if time.perf_counter() - started > timeout_s:
                raise RuntimeError(f"{self.name} was not ready after {timeout_s:g} s; its log:\n"
                                   f"{self.log.read_text()[-3000:]}")
            try:
                if (await http_get(self.port, self.ready_path, timeout_s=5))[0] == 200:
                    return time.perf_counter() - started
            except (TimeoutError, OSError, asyncio.IncompleteReadError):
                pass
            await asyncio.sleep(0.1)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is not None:
            print(f"  {self.name} had exited with {self.process.returncode}; its log:\n"
                  f"{self.log.read_text()[-3000:]}", file=sys.stderr)
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def service_env(args: argparse.Namespace, models_dir: Path, model: str, port: int) -> dict[str, str]:
    """The service's settings (the naive servers read the ONNX Runtime ones from the same variables)."""
    return {
        "SERVE_MODELS_DIR": str(models_dir), "SERVE_MODELS": model, "SERVE_HOST": "127.0.0.1",
        "SERVE_PORT": str(port), "SERVE_ACCESS_LOG": "false", "SERVE_LOG_LEVEL": "warning",
        "SERVE_GRACEFUL_SHUTDOWN_S": "2",
    } | dict(item.split("=", 1) for item in args.server_env)


def service_settings(args: argparse.Namespace) -> Settings:
    """The service's settings as the servers will read them (for the ceiling's session options)."""
    saved = dict(os.environ)
    os.environ.update(dict(item.split("=", 1) for item in args.server_env))
    try:
        return Settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


async def read_service_metrics(port: int) -> dict[tuple[str, str], float]:
    status, body = await http_get(port, "/metrics")
    if status != 200:
        return {}
    return {(m[1], m[2]): float(m[3]) for line in body.decode().splitlines() if (m := METRIC_LINE.match(line))}


async def read_batch_caps(port: int, model: str, api_key: str | None) -> dict[str, Any]:
    """The batch caps the service's warm-up search chose for `model`, from `/models`."""
    status, body = await http_get(port, "/models", api_key=api_key)
    if status != 200:
        return {}
    described = next((item for item in json.loads(body)["models"] if item["name"] == model), {})
    return {key: described.get(key) for key in ("max_batch_size", "max_padded_tokens", "batch_size_curve")}


def service_means(before: dict[tuple[str, str], float], after: dict[tuple[str, str], float],
                  model: str) -> dict[str, float | None]:
    means: dict[str, float | None] = {}
    for series, name in SERVICE_SERIES.items():
        total, count = (after.get((f"modelserver_{series}_{part}", model), 0.0)
                        - before.get((f"modelserver_{series}_{part}", model), 0.0) for part in ("sum", "count"))
        means[name] = total / count if count else None
    return means
