"""Who sends a model its requests, and what follows from it: which of the model's metrics this process records,
and when a batch runs on the event loop rather than on the batcher's thread.

- `ClientIntake`: the requests of this process's own clients. It records their waits and preprocessing, and a
  lone fast request runs on the event loop while the server keeps up with its reading.
- `WorkerBatchIntake`: the inference process of `SERVE_SHARED_INFERENCE`, whose requests are the front-end
  workers' batches, which the workers record. It answers no HTTP, so a fast model's batches run on the event
  loop at any load, while the workers' next batches wait in their sockets.

`inline_rule` puts that together with the executor (a batch waiting on another process never runs inline) and
the settings; it is chosen once, when the model opens to traffic.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Protocol

from app.intake_load import IntakeLoad
from app.models.batch_tuning import BatchTiming
from app.models.executors import Executor
from app.settings import Settings

# Whether a batch of so many rows runs on the event loop.
InlineRule = Callable[[int], bool]

# A batch runs on the event loop when the model answers a batch of one this fast: two thread hand-offs cost
# about as much as a small model's whole inference, while blocking the loop this long is harmless.
INLINE_MAX_SECONDS = 0.002
# ... but for the clients' own requests, not while requests wait unread this long (Linux counts it in 4 ms
# steps): "nothing else in flight" then only means the loop reads one request at a time, and running batches on
# it would keep it that way.
BEHIND_SECONDS = 0.008
# With a single CPU, a worker thread adds no parallelism: it only takes turns with the event loop at the GIL.
# Every batch measured at warm-up to take at most this long then runs on the loop; longer ones keep the
# thread, so the loop still answers health probes while a heavy model computes.
SINGLE_CPU_INLINE_MAX_SECONDS = 0.02


class Intake(Protocol):
    """Where a model's requests come from."""

    records_requests: bool  # this process records the requests' queue waits and preprocessing

    def inline_rule(self, batch_curve: list[BatchTiming]) -> InlineRule | None:
        """When a batch runs on the event loop, for a model timed as `batch_curve` on more than one CPU."""
        ...


class ClientIntake:
    """The requests of this process's clients: a lone fast request runs inline while the server keeps up."""

    records_requests = True

    def __init__(self, load: IntakeLoad) -> None:
        self._load = load

    def inline_rule(self, batch_curve: list[BatchTiming]) -> InlineRule | None:
        if batch_curve[0].seconds_per_batch > INLINE_MAX_SECONDS:
            return None
        load = self._load
        return lambda rows: load.in_flight <= 1 and load.read_delay_s < BEHIND_SECONDS


class WorkerBatchIntake:
    """The front-end workers' batches, in the inference process: a fast model's batches all run inline."""

    records_requests = False

    def inline_rule(self, batch_curve: list[BatchTiming]) -> InlineRule | None:
        if batch_curve[0].seconds_per_batch > INLINE_MAX_SECONDS:
            return None
        return lambda rows: True


def inline_rule(intake: Intake, executor: Executor, settings: Settings, batch_curve: list[BatchTiming],
                single_cpu: bool) -> InlineRule | None:
    """When a model's batches run on the event loop; None for never (always on the batcher's thread)."""
    if not executor.may_run_inline or settings.max_batch_wait_ms > 0 or not batch_curve:
        return None  # the batch waits on another process, a batching window was asked for, or nothing was timed
    if single_cpu:
        return partial(_short_enough, batch_curve)
    return intake.inline_rule(batch_curve)


def _short_enough(batch_curve: list[BatchTiming], rows: int) -> bool:
    """Whether a batch of `rows` took at most SINGLE_CPU_INLINE_MAX_SECONDS at warm-up: the time of the smallest
    measured size that holds `rows`, else the largest size's, scaled."""
    timing = next((t for t in batch_curve if t.batch_size >= rows), batch_curve[-1])
    return timing.seconds_per_batch * max(1.0, rows / timing.batch_size) <= SINGLE_CPU_INLINE_MAX_SECONDS
