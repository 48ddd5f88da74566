"""The inference process of `SERVE_SHARED_INFERENCE`: it holds every session, with one batcher per model that
the batches of every front-end worker feed (app.topology.inference_link), so batches form from all the traffic and a
GPU holds one CUDA context and one copy of each model.

The supervisor (`python -m app`) starts it before the workers, starts a new one if it dies, and stops it once
the workers have drained: it ignores SIGINT and SIGTERM, which the workers answer first, and stops when the
supervisor closes its end of a pipe, or dies.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
import threading
import time
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from app.errors import ModelNotReady
from app.models.registry import ModelRegistry
from app.observability import tracing
from app.observability.logs import configure_logging
from app.observability.metrics import Metrics
from app.settings import Settings
from app.topology import inference_link
from app.topology.model_factories import inference_process_models
from app.topology.workers import INFERENCE, WARM_UP_TIMING, WorkerBoard, one_worker_at_a_time

logger = logging.getLogger(__name__)

# A process that dies this soon after it started is not started again at once: it would only die again.
RESTART_PAUSE_S = 1.0


class InferenceProcess:
    """The supervisor's handle on the inference process: starts it, starts a new one when it dies, stops it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._context = multiprocessing.get_context("spawn")
        self._stopping = threading.Event()
        self._process: multiprocessing.process.BaseProcess | None = None
        self._stop_sender: Connection | None = None
        self._watcher = threading.Thread(target=self._watch, name="inference-process-watcher", daemon=True)

    def start(self) -> None:
        self._spawn()
        self._watcher.start()

    def _spawn(self) -> None:
        receiver, self._stop_sender = self._context.Pipe(duplex=False)
        self._process = self._context.Process(target=run, args=(str(self.directory), receiver),
                                              name="modelserver-inference")
        self._process.start()
        receiver.close()  # the process has its own copy: when the supervisor's end closes, it reads the end
        logger.info("inference process %d started", self._process.pid)

    def _watch(self) -> None:
        while not self._stopping.is_set():
            assert self._process is not None
            started = time.monotonic()
            self._process.join()
            if self._stopping.is_set():
                return
            logger.error("inference process %d exited with code %s; starting another", self._process.pid,
                         self._process.exitcode)
            if self._stop_sender is not None:
                self._stop_sender.close()
            self._stopping.wait(max(0.0, RESTART_PAUSE_S - (time.monotonic() - started)))
            if not self._stopping.is_set():
                self._spawn()

    def stop(self, timeout_s: float) -> None:
        """Let the process finish what it holds and exit (after the workers: they wait on its answers)."""
        self._stopping.set()
        if self._stop_sender is not None:
            self._stop_sender.close()
        self._watcher.join(timeout_s)  # the watcher alone waits on the process, and returns once it exits
        if self._watcher.is_alive() and self._process is not None:
            logger.error("inference process %d did not stop within %.0f s; killing it", self._process.pid,
                         timeout_s)
            self._process.kill()
            self._watcher.join()


def run(directory: str, stop_receiver: Connection) -> None:
    """The inference process's main function."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # The only process with sessions: ONNX Runtime's threads get every CPU, not a worker's share.
    settings = Settings().model_copy(update={"workers": 1})
    configure_logging(settings.log_level, settings.log_format)
    tracing.configure_tracing("inference")  # the supervisor checked the exporter before starting it
    try:
        asyncio.run(_serve(settings, Path(directory), stop_receiver))
    finally:
        tracing.shutdown_tracing()


async def _serve(settings: Settings, directory: Path, stop_receiver: Connection) -> None:
    board = WorkerBoard(directory, 1, role=INFERENCE)
    board.publish(False)
    metrics = Metrics()
    timing_turn = partial(one_worker_at_a_time, directory, WARM_UP_TIMING)
    registry = ModelRegistry(settings, metrics, inference_process_models(settings, metrics, timing_turn))
    registry.discover()
    server = await inference_link.serve(inference_link.link_path(directory), _Answers(registry, settings).answer)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_stop() -> None:  # the pipe reads its end: the supervisor closed it, or died
        loop.remove_reader(stop_receiver.fileno())
        stop.set()

    loop.add_reader(stop_receiver.fileno(), on_stop)
    loading = asyncio.create_task(registry.load_all(), name="load-models")
    loading.add_done_callback(lambda _: board.publish(registry.ready_here))
    await stop.wait()
    logger.info("inference process stopping: answering what is queued")
    server.close()
    loading.cancel()
    await asyncio.gather(loading, return_exceptions=True)
    await registry.drain()
    board.leave()


class _Answers:
    """What the inference process answers on the link."""

    def __init__(self, registry: ModelRegistry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings

    async def answer(self, message: inference_link.Message) -> Any:
        kind, name, version, *arguments = message
        model = self.registry.models.get(name)
        if kind == "describe":
            if model is None or model.config.version != version:
                reason = self.registry.failures.get(name) or (
                    f"it serves {name} version {model.config.version}, not {version}: with "
                    "SERVE_SHARED_INFERENCE a new version is served after a restart" if model is not None
                    else f"it does not serve {name}")
                return {"state": "failed", "error": reason}
            return {
                "state": model.state.value,
                "error": model.error,
                "provider": model.provider,
                "max_batch_size": model.max_batch_size,
                "max_padded_tokens": model.max_padded_tokens,
                "batch_curve": model.batch_curve,
                "intra_op_threads": model.intra_op_threads,
            }
        if model is None or model.config.version != version:
            raise ModelNotReady(f"model {name!r} version {version} is not served by the inference process")
        output_names, feeds, trace = arguments
        rows = len(next(iter(feeds.values())))
        split = [{input_name: batch[row] for input_name, batch in feeds.items()} for row in range(rows)]
        deadline = time.perf_counter() + self.settings.request_timeout_s
        with tracing.linked_context(trace):  # the front end's batch: this process's batch links it
            answers = await model.infer(split, tuple(output_names), deadline)
        return [np.stack([answer[output] for answer in answers]) for output in output_names]
