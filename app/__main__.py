"""`python -m app`: serve with uvicorn on SERVE_HOST:SERVE_PORT, in one process or `SERVE_WORKERS` of them."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from app.observability.logs import configure_logging
from app.settings import Settings
from app.topology.inference_process import InferenceProcess
from app.topology.reuse_port import reserve_port
from app.topology.shutdown import defer_sigterm
from app.topology.workers import SHARED_DIRECTORY_ENV
from app.transport.http.application import create_app
from app.transport.http.limits import LimitedHttpToolsProtocol

APP_FACTORY = "app.__main__:create_served_app"

logger = logging.getLogger(__name__)


def create_served_app() -> FastAPI:
    """The app of one server process (uvicorn's factory, called as it starts serving): settings and logging
    come from the environment; SIGTERM first stops intake (app.topology.shutdown)."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings)
    defer_sigterm(app.state.registry.stop_intake, settings.shutdown_delay_s)
    return app


def main() -> None:
    settings = Settings()
    # uvicorn re-raises SIGTERM once its graceful shutdown is done; a drained shutdown is a clean exit.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    configure_logging(settings.log_level, settings.log_format)
    if settings.auto_workers_reason is not None:
        logger.info("SERVE_WORKERS=auto: %d worker(s), %s", settings.workers, settings.auto_workers_reason)
        os.environ["SERVE_WORKERS"] = str(settings.workers)  # the workers take this count, not their own reading
    options = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,  # uvicorn's loggers go through the root handler configure_logging set up
        "log_level": settings.log_level,
        "access_log": settings.access_log,
        "timeout_graceful_shutdown": settings.graceful_shutdown_s,
        "http": LimitedHttpToolsProtocol,
        "h11_max_incomplete_event_size": settings.max_header_bytes,  # the head limit LimitedHttpToolsProtocol applies
    }
    if settings.workers == 1 and not settings.shared_inference:
        uvicorn.run(APP_FACTORY, factory=True, **options)
        return
    # Each worker listens on a socket of its own (app.topology.reuse_port); this one only keeps the port reserved.
    try:
        reserved = reserve_port(settings.host, settings.port)
    except OSError as exc:
        logger.error("cannot serve on %s:%d: %s", settings.host, settings.port, exc)
        sys.exit(STARTUP_FAILURE)
    # The workers share metrics and readiness through a fresh directory (app.topology.workers), made before they start:
    # prometheus-client reads its location when each worker imports it.
    shared = tempfile.mkdtemp(prefix="modelserver-workers-")
    os.environ[SHARED_DIRECTORY_ENV] = shared
    inference = InferenceProcess(Path(shared)) if settings.shared_inference else None
    if inference is not None:
        inference.start()  # the workers wait for it as they load
    logger.info("serving on http://%s:%d with %d workers%s", settings.host, settings.port, settings.workers,
                " and an inference process" if inference is not None else "")
    supervisor = Multiprocess(uvicorn.Config(APP_FACTORY, factory=True, workers=settings.workers, **options),
                              sockets=[reserved])
    try:
        supervisor.run()
    finally:
        if inference is not None:  # after the workers: they drained through it
            inference.stop(settings.graceful_shutdown_s)
        reserved.close()
        shutil.rmtree(shared, ignore_errors=True)
    # uvicorn's supervisor stops when a worker fails to start (SERVE_STRICT_STARTUP), but returns as from a
    # clean stop: exit as a single process would, so that a process manager sees the failure.
    if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
        sys.exit(STARTUP_FAILURE)


if __name__ == "__main__":
    main()
