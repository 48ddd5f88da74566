"""Several worker processes on one port (`SERVE_WORKERS`): what they share, so the service still reads as one.

uvicorn's supervisor starts and replaces the workers, each listening on a socket of its own on the one port
(app.reuse_port), so the kernel spreads connections among them; each worker loads its own sessions and batches
its own traffic. They share one directory, named by
`PROMETHEUS_MULTIPROC_DIR`: prometheus-client's multiprocess files, so `/metrics` on any worker counts the
requests of all of them, and one readiness file per worker, so `/health/ready` on any worker is 200 only when
every worker is ready. The supervisor replaces a worker that dies; the replacement counts once it is ready.
"""

from __future__ import annotations

import fcntl
import operator
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client import ProcessCollector, multiprocess
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

SHARED_DIRECTORY_ENV = "PROMETHEUS_MULTIPROC_DIR"
_READY_PREFIX = "worker-"


def shared_directory() -> Path | None:
    """The directory the workers share, or None when the service runs as one process."""
    value = os.environ.get(SHARED_DIRECTORY_ENV)
    return Path(value) if value else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, under another user
        return True
    return True


@contextmanager
def one_worker_at_a_time(name: str) -> Iterator[None]:
    """Run the block in one worker at a time (an exclusive lock on a file named `name` in the shared
    directory); in a single process, just run it. The workers start together, and timings taken in several of
    them at once would measure their competition for the CPUs, not the model."""
    directory = shared_directory()
    if directory is None:
        yield
        return
    with (directory / f"{name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class WorkerBoard:
    """Each worker's readiness, one small file per worker in the shared directory."""

    def __init__(self, directory: Path, expected: int) -> None:
        self.directory = directory
        self.expected = expected
        self.pid = os.getpid()

    def publish(self, ready: bool) -> None:
        """Say whether this worker is ready (written atomically: readers never see half a file)."""
        path = self.directory / f"{_READY_PREFIX}{self.pid}"
        partial = path.with_suffix(".partial")
        partial.write_text("1" if ready else "0")
        partial.replace(path)

    def leave(self) -> None:
        """This worker is stopping: forget its readiness and its live gauges."""
        (self.directory / f"{_READY_PREFIX}{self.pid}").unlink(missing_ok=True)
        multiprocess.mark_process_dead(self.pid, str(self.directory))

    def workers(self) -> dict[int, bool]:
        """Ready or not, per live worker; the files of workers that died are removed on the way."""
        states = {}
        for path in self.directory.glob(f"{_READY_PREFIX}*"):
            pid_text = path.name.removeprefix(_READY_PREFIX)
            if not pid_text.isdigit():
                continue
            pid = int(pid_text)
            if not _alive(pid):
                path.unlink(missing_ok=True)
                multiprocess.mark_process_dead(pid, str(self.directory))
                continue
            try:
                states[pid] = path.read_text() == "1"
            except FileNotFoundError:  # it stopped meanwhile
                continue
        return states

    def all_ready(self) -> bool:
        """Every expected worker is up and ready."""
        states = self.workers()
        return len(states) >= self.expected and all(states.values())

    def pids(self) -> list[int]:
        return sorted(self.workers())


class WorkersProcessCollector(Collector):
    """`process_*` metrics summed over every live worker (CPU seconds, memory, open files), under the names a
    single process exports, so dashboards read the same series either way."""

    def __init__(self, board: WorkerBoard) -> None:
        self.board = board

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        for pid in self.board.pids():
            for family in ProcessCollector(pid=lambda pid=pid: pid, registry=None).collect():
                kept = families.setdefault(family.name, family)
                if kept is family:
                    continue
                combine = min if family.name.endswith(("start_time_seconds", "max_fds")) else operator.add
                (total,), (sample,) = kept.samples, family.samples
                kept.samples[0] = total._replace(value=combine(total.value, sample.value))
        yield from families.values()
