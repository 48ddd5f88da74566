"""Several worker processes on one port (`SERVE_WORKERS`): what they share, so the service still reads as one.

uvicorn's supervisor starts and replaces the workers, each listening on a socket of its own on the one port
(app.topology.reuse_port), so the kernel spreads connections among them; each worker loads its own sessions and batches
its own traffic, or, with `SERVE_SHARED_INFERENCE`, hands its batches to the one inference process
(app.topology.inference_process). They share one directory, named by `PROMETHEUS_MULTIPROC_DIR`: prometheus-client's
multiprocess files, so `/metrics` on any worker counts the requests of all of them, and one readiness file per
process, so `/health/ready` on any worker is 200 only when every worker (and the inference process) is ready,
and the table of the API keys' quotas (app.dataplane.quotas), so a key's limits hold for the instance.
The supervisor replaces a worker or inference process that dies; the replacement counts once it is ready.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client import multiprocess

# Set by the `Workers` topology (app.topology.topology) before the workers start: prometheus-client reads it.
SHARED_DIRECTORY_ENV = "PROMETHEUS_MULTIPROC_DIR"
WORKER = "worker"
WARM_UP_TIMING = "warm-up-timing"  # the lock the processes take turns at to time their models at warm-up
INFERENCE = "inference"  # the one process holding the sessions, with SERVE_SHARED_INFERENCE
KEY_QUOTAS = "key-quotas"  # the file of the keys' rate and in-flight quotas (app.dataplane.quotas)


def process_alive(pid: int) -> bool:
    """Whether the process `pid` is running (under any user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, under another user
        return True
    return True


@contextmanager
def one_worker_at_a_time(directory: Path, name: str) -> Iterator[None]:
    """Run the block in one process at a time among those sharing `directory` (an exclusive lock on a file
    named `name` in it). The workers start together, and timings taken in several of them at once would
    measure their competition for the CPUs, not the model."""
    with (directory / f"{name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class WorkerBoard:
    """Each process's readiness, one small file per process in the shared directory: the workers', and the
    inference process's with `SERVE_SHARED_INFERENCE`."""

    def __init__(self, directory: Path, expected: int, *, role: str = WORKER, shared_inference: bool = False) -> None:
        self.directory = directory
        self.expected = expected
        self.role = role
        self.shared_inference = shared_inference  # the workers are ready only while the inference process is
        self.pid = os.getpid()

    def publish(self, ready: bool) -> None:
        """Say whether this process is ready (written atomically: readers never see half a file)."""
        path = self.directory / f"{self.role}-{self.pid}"
        partial = path.with_suffix(".partial")
        partial.write_text("1" if ready else "0")
        partial.replace(path)

    def leave(self) -> None:
        """This process is stopping: forget its readiness and its live gauges."""
        (self.directory / f"{self.role}-{self.pid}").unlink(missing_ok=True)
        multiprocess.mark_process_dead(self.pid, str(self.directory))

    def workers(self) -> dict[int, bool]:
        """Ready or not, per live worker; the files of workers that died are removed on the way."""
        return self._states(self.role)

    def _states(self, role: str) -> dict[int, bool]:
        states = {}
        for path in self.directory.glob(f"{role}-*"):
            pid_text = path.name.removeprefix(f"{role}-")
            if not pid_text.isdigit():
                continue
            pid = int(pid_text)
            if not process_alive(pid):
                path.unlink(missing_ok=True)
                multiprocess.mark_process_dead(pid, str(self.directory))
                continue
            try:
                states[pid] = path.read_text() == "1"
            except FileNotFoundError:  # it stopped meanwhile
                continue
        return states

    def inference_processes(self) -> dict[int, bool]:
        """Ready or not, per live inference process (one, or none while it starts again)."""
        return self._states(INFERENCE) if self.shared_inference else {}

    def inference_ready(self) -> bool:
        """The inference process is up and every model is ready in it (True without one)."""
        return not self.shared_inference or any(self.inference_processes().values())

    def all_ready(self) -> bool:
        """Every expected worker is up and ready, and so is the inference process if there is one."""
        states = self.workers()
        return len(states) >= self.expected and all(states.values()) and self.inference_ready()

    def pids(self) -> list[int]:
        """The workers and the inference process."""
        return sorted([*self.workers(), *self.inference_processes()])

