"""The service's processes, chosen once at start-up from the settings by `choose_topology`:

- `SingleProcess`: one uvicorn server (`SERVE_WORKERS=1`).
- `Workers`: uvicorn's supervisor with `SERVE_WORKERS` server processes on one port (app.topology.reuse_port),
  sharing a fresh directory for metrics and readiness (app.topology.workers); with `SERVE_SHARED_INFERENCE`, also
  the inference process whose batches they feed (app.topology.inference_process).

Each hands its server processes their `ServerRole` (app.topology.roles) before uvicorn starts them, and serves
the app factory it is given with the uvicorn options it is given, TLS ones included (app.topology.tls): uvicorn's
supervisor wraps each worker's pre-bound socket in TLS as a single server does.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from app.settings import Settings
from app.topology.hangup import HangupForwarding
from app.topology.inference_process import InferenceProcess
from app.topology.reuse_port import reserve_port
from app.topology.roles import ServerRole
from app.topology.worker_count import auto_workers
from app.topology.workers import SHARED_DIRECTORY_ENV

logger = logging.getLogger(__name__)


class SingleProcess:
    """One server process, with its own metrics and readiness."""

    role = ServerRole(workers=1, directory=None, shared_inference=False)

    def run(self, factory: str, options: dict[str, Any]) -> None:
        """Serve `factory` (uvicorn's import string) until stopped; exit as uvicorn does when start-up fails."""
        self.role.hand_over()
        uvicorn.run(factory, factory=True, **options)


class Workers:
    """`count` server processes on one port, and the inference process when `shared_inference`; this process
    supervises them, replacing any that dies."""

    def __init__(self, count: int, *, shared_inference: bool, graceful_shutdown_s: float,
                 url_scheme: str, grpc_port: int | None = None) -> None:
        self.count = count
        self.grpc_port = grpc_port  # each worker serves gRPC on it too (app.transport.grpc.server)
        self.url_scheme = url_scheme  # for the log line: the TLS options come with the uvicorn options
        self.shared_inference = shared_inference
        self.graceful_shutdown_s = graceful_shutdown_s

    def run(self, factory: str, options: dict[str, Any]) -> None:
        """Serve `factory` in every worker until stopped; exit with uvicorn's start-up failure status when a
        worker fails to start."""
        host, port = options["host"], options["port"]
        # Each worker listens on a socket of its own (app.topology.reuse_port); this one only keeps the port reserved.
        ports = [port] if self.grpc_port is None else [port, self.grpc_port]
        reservations = []
        for each in ports:
            try:
                reservations.append(reserve_port(host, each))
            except OSError as exc:
                logger.error("cannot serve on %s:%d: %s", host, each, exc)
                sys.exit(STARTUP_FAILURE)
        reserved = reservations[0]
        # Made before the workers start: prometheus-client reads its location when each worker imports it.
        directory = Path(tempfile.mkdtemp(prefix="modelserver-workers-"))
        os.environ[SHARED_DIRECTORY_ENV] = str(directory)
        ServerRole(self.count, directory, self.shared_inference).hand_over()
        inference = InferenceProcess(directory) if self.shared_inference else None
        if inference is not None:
            inference.start()  # the workers wait for it as they load
        logger.info("serving on %s://%s:%d with %d workers%s", self.url_scheme, host, port, self.count,
                    " and an inference process" if inference is not None else "")
        supervisor = HangupForwarding(uvicorn.Config(factory, factory=True, workers=self.count, **options),
                                  sockets=[reserved])
        try:
            supervisor.run()
        finally:
            if inference is not None:  # after the workers: they drained through it
                inference.stop(self.graceful_shutdown_s)
            for held in reservations:
                held.close()
            shutil.rmtree(directory, ignore_errors=True)
        # uvicorn's supervisor stops when a worker fails to start (SERVE_STRICT_STARTUP), but returns as from a
        # clean stop: exit as a single process would, so that a process manager sees the failure.
        if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
            sys.exit(STARTUP_FAILURE)


def choose_topology(settings: Settings) -> SingleProcess | Workers:
    """The processes the settings ask for. `SERVE_WORKERS=auto` becomes a number here (app.topology.worker_count),
    logged with its reason and handed to the server processes in their environment, so every one of them reads
    the same count."""
    count = settings.workers
    if count == "auto":
        choice = auto_workers(settings.providers)
        logger.info("SERVE_WORKERS=auto: %d worker(s), %s", choice.count, choice.reason)
        os.environ["SERVE_WORKERS"] = str(choice.count)
        count = choice.count
    if count == 1 and not settings.shared_inference:
        return SingleProcess()
    return Workers(count, shared_inference=settings.shared_inference,
                   graceful_shutdown_s=settings.graceful_shutdown_s, url_scheme=settings.url_scheme,
                   grpc_port=settings.grpc_port)
