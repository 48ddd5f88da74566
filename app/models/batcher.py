"""A dynamic batcher: merges concurrent requests for one model into as few calls of its batch function as it can.

The contract, so that a caller need not read the loop:
- Batch function: `run_batch(requests)` returns one outcome per request, in order: that request's result, or
  the exception it answers with. An exception the batch function raises answers every request of the batch.
  It runs on the batcher's one worker thread, or on the event loop when `run_inline(rows)` says so (a short
  batch: it saves two thread hand-offs and, on a single CPU, the loop and the thread taking turns at the GIL).
- Size: a batch holds at most `max_batch_size` rows; `submit` refuses a request of more rows (`ValueError`),
  which the caller splits.
- Wait: a request that reaches an idle batcher runs at once. While a batch runs, new requests queue, and the
  next batch takes as many of them as fit, so batches grow with load on their own. With `max_wait_s`, the next
  batch waits up to that long to fill. A lone request that may run inline first gives the loop one turn, so
  that the requests the server has already read queue behind it.
- Ordering: the oldest queued request is always in the next batch, so none starves. Without `length_of`, the
  batch takes the queue in order while it fits. With `length_of` (a text request's longest row, in tokens),
  it takes the queued requests closest in length to the oldest while the padded batch (rows times its longest
  length) stays within `max_padded_size` and, with `max_padding`, its padding within that fraction of its real
  length: a mixed queue runs as a few batches of like lengths.
- Queue and deadlines: at most `max_queue_size` requests queue (`QueueFull`). Each request has a deadline, a
  `time.perf_counter()` value: `DeadlineExceeded` at once when the rows queued ahead of it, at the pace batches
  have been running, would take longer than it leaves, and whenever it passes before the answer.
- Clients: a request whose client has gone (`client_gone()`) is dropped unrun (`ClientDisconnected`) when its
  batch forms.
- Drain: `drain()` refuses new requests (`ShuttingDown`), answers everything already queued, then stops the
  worker thread.
- Callbacks: `on_batch(rows, queue waits)` as each batch forms, `on_queue_change(depth)` as the queue changes.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from app.errors import ClientDisconnected, DeadlineExceeded, QueueFull, ShuttingDown
from app.models.batch_selection import BatchCaps, take_in_order, take_similar_lengths

RequestT = TypeVar("RequestT")
ResultT = TypeVar("ResultT")

# Runs in the batcher's worker thread: one outcome (a result or the exception for that request) per request.
BatchFunction = Callable[[Sequence[RequestT]], list[Any]]

# The weight of the latest batch in the running estimate of seconds per row (which tells how long the queue
# will take): a few batches of a new pace (a burst of long texts, a busier CPU) move it most of the way.
PACE_SMOOTHING = 0.3


@dataclass(eq=False)
class _Pending(Generic[RequestT]):
    request: RequestT
    rows: int
    deadline: float
    future: asyncio.Future[Any]
    length: float  # `length_of(request)`, worked out once; 0 without length bucketing
    client_gone: Callable[[], bool] | None
    enqueued_at: float = field(default_factory=time.perf_counter)


class Batcher(Generic[RequestT, ResultT]):
    """Queues requests for one model and runs them in batches on a dedicated worker thread.

    Over 150 lines because the queue, the deadline refusals, the inline-or-thread choice and the drain share
    one piece of state (what is queued and what is running) that each must read and change in the same step
    of the event loop; split apart, each part would reach into the others'. Which requests a batch takes is
    apart already (app.models.batch_selection)."""

    def __init__(
        self,
        name: str,
        run_batch: BatchFunction[RequestT],
        *,
        max_batch_size: int,
        max_queue_size: int,
        max_wait_s: float = 0.0,
        on_batch: Callable[[int, list[float]], None] | None = None,
        on_queue_change: Callable[[int], None] | None = None,
        run_inline: Callable[[int], bool] | None = None,
        length_of: Callable[[RequestT], float] | None = None,
        max_padded_size: int | None = None,
        max_padding: float | None = None,
    ) -> None:
        self.name = name
        self.max_batch_size = max_batch_size
        self.max_queue_size = max_queue_size
        self.max_wait_s = max_wait_s
        self._run_batch = run_batch
        self._on_batch = on_batch
        self._on_queue_change = on_queue_change
        self._run_inline = run_inline
        self._length_of = length_of
        self._caps = BatchCaps(max_batch_size, max_padded_size, max_padding)
        self._running = False  # a batch is running (on the worker thread or the loop)
        self._claimed = False  # a lone request is about to run on the event loop
        self._queue: deque[_Pending[RequestT]] = deque()
        self._queued_rows = 0
        self._arrival = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"batch-{name}")
        self._worker: asyncio.Task[None] | None = None
        self._draining = False
        self._seconds_per_row = 0.0  # the recent pace of batches; 0 until one has run

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        """Start the worker; call from the event loop that will submit requests."""
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._work(), name=f"batcher-{self.name}")

    async def submit(self, request: RequestT, rows: int, deadline: float,
                     client_gone: Callable[[], bool] | None = None) -> ResultT:
        """Queue `request` (`rows` rows, at most `max_batch_size`) and wait for its result.

        `deadline` is a `time.perf_counter()` value; `client_gone` says whether the client has left, checked
        when the request's batch forms. Raises `QueueFull`, `ShuttingDown`, `DeadlineExceeded`,
        `ClientDisconnected`, or the exception the batch function gave for this request.
        """
        if self._draining or self._worker is None:
            raise ShuttingDown(f"model {self.name!r} is not taking requests: the service is shutting down")
        if len(self._queue) >= self.max_queue_size:
            raise QueueFull(f"model {self.name!r} has {len(self._queue)} requests queued; retry later")
        if rows > self.max_batch_size:
            raise ValueError(f"{rows} rows exceed max_batch_size {self.max_batch_size}")
        now = time.perf_counter()
        if now >= deadline:
            raise DeadlineExceeded(f"the request's deadline passed before model {self.name!r} could queue it; "
                                   "retry later")
        backlog_s = self._queued_rows * self._seconds_per_row
        if backlog_s and now + backlog_s > deadline:
            # It would reach its deadline in the queue: refused now, it costs neither a queue slot nor the wait.
            raise DeadlineExceeded(f"model {self.name!r} has about {backlog_s:.2f} s of requests queued, more "
                                   "than this request's deadline leaves; retry later")
        first_in_line = self._run_inline is not None and self._idle() and self._run_inline(rows)
        if first_in_line:
            # Claim the batcher, then give the loop one turn, so requests the server has already read queue
            # up behind this one: without it, each would find the batcher idle and run as a lone request.
            self._claimed = True
            try:
                await asyncio.sleep(0)
            finally:
                self._claimed = False
            # Draining began during that turn: the worker may be gone, so a request left alone runs now.
            if not self._queue and (self._draining or self._run_inline(rows)):
                return self._run_now(request, rows)
        loop = asyncio.get_running_loop()
        length = self._length_of(request) if self._length_of is not None else 0
        pending = _Pending(request, rows, deadline, loop.create_future(), length, client_gone)
        if first_in_line:  # others queued during its turn: it goes first in their batch
            self._queue.appendleft(pending)
        else:
            self._queue.append(pending)
        self._queued_rows += rows
        self._arrival.set()
        if self._on_queue_change:
            self._on_queue_change(len(self._queue))
        # A plain timer rather than asyncio.timeout(), which cost the event loop much more (docs/benchmarks.md).
        expiry = loop.call_later(deadline - time.perf_counter(), self._expire, pending)
        try:
            return await pending.future
        finally:
            expiry.cancel()

    def _expire(self, pending: _Pending[RequestT]) -> None:
        if not pending.future.done():
            pending.future.set_exception(
                DeadlineExceeded(f"model {self.name!r} did not answer within the request deadline; retry later")
            )

    def _idle(self) -> bool:
        return not self._running and not self._claimed and not self._queue

    def _run_now(self, request: RequestT, rows: int) -> ResultT:
        """Run one request as a batch of its own on the calling (event loop) thread."""
        if self._on_batch:
            self._on_batch(rows, [0.0])
        started = time.perf_counter()
        (outcome,) = self._run_batch([request])
        self._note_pace(time.perf_counter() - started, rows)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def _note_pace(self, seconds: float, rows: int) -> None:
        per_row = seconds / rows
        if self._seconds_per_row:
            per_row = self._seconds_per_row + PACE_SMOOTHING * (per_row - self._seconds_per_row)
        self._seconds_per_row = per_row

    async def drain(self) -> None:
        """Refuse new requests, finish every queued one, then stop the worker thread."""
        self._draining = True
        self._arrival.set()
        if self._worker is not None:
            await self._worker
        self._executor.shutdown(wait=True)

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            if not batch:
                return
            requests = [pending.request for pending in batch]
            rows = sum(pending.rows for pending in batch)
            inline = self._run_inline is not None and self._run_inline(rows)
            self._running = True
            started = time.perf_counter()
            try:
                if inline:
                    outcomes = self._run_batch(requests)
                else:
                    outcomes = await loop.run_in_executor(self._executor, self._run_batch, requests)
            except Exception as exc:  # noqa: BLE001 - the batch function broke: each request gets the error
                outcomes = [exc] * len(batch)
            finally:
                self._running = False
            self._note_pace(time.perf_counter() - started, rows)
            for pending, outcome in zip(batch, outcomes, strict=True):
                if pending.future.done():  # its caller gave up (deadline or disconnect)
                    continue
                if isinstance(outcome, BaseException):
                    pending.future.set_exception(outcome)
                else:
                    pending.future.set_result(outcome)
            if inline:  # let the answers go out and the requests that came in meanwhile queue up
                await asyncio.sleep(0)

    async def _next_batch(self) -> list[_Pending[RequestT]]:
        """Wait for work, then take up to `max_batch_size` rows of live requests; [] once drained."""
        while True:
            while not self._queue:
                if self._draining:
                    return []
                self._arrival.clear()
                await self._arrival.wait()
            if self.max_wait_s > 0 and self._queued_rows < self.max_batch_size and not self._draining:
                await self._wait_for_more()
            batch = self._take_live_requests()
            if batch:
                return batch

    def _take_live_requests(self) -> list[_Pending[RequestT]]:
        """Pop the requests of the next batch, dropping those whose callers left or whose deadline passed."""
        now = time.perf_counter()
        self._drop_dead(now)
        if self._length_of is not None and len(self._queue) > 1:
            batch, self._queue = take_similar_lengths(self._queue, self._caps)
        else:
            batch = take_in_order(self._queue, self._caps)
        self._queued_rows -= sum(pending.rows for pending in batch)
        batch = [pending for pending in batch if not self._client_left(pending)]
        if self._on_queue_change:
            self._on_queue_change(len(self._queue))
        if self._on_batch and batch:
            self._on_batch(sum(pending.rows for pending in batch), [now - pending.enqueued_at for pending in batch])
        return batch

    def _drop_dead(self, now: float) -> None:
        """Forget requests whose callers gave up, and fail those still queued at their deadline."""
        live: deque[_Pending[RequestT]] = deque()
        for pending in self._queue:
            if pending.future.done():
                continue
            if pending.deadline <= now:
                pending.future.set_exception(
                    DeadlineExceeded(f"model {self.name!r} could not start this request before its deadline")
                )
                continue
            live.append(pending)
        self._queue = live
        self._queued_rows = sum(pending.rows for pending in live)

    def _client_left(self, pending: _Pending[RequestT]) -> bool:
        """Whether the request's client has closed its connection; if so, its request is answered unrun."""
        if pending.client_gone is None or not pending.client_gone():
            return False
        pending.future.set_exception(
            ClientDisconnected(f"the client left while its request for model {self.name!r} was queued")
        )
        return True

    async def _wait_for_more(self) -> None:
        """Hold the first request up to `max_wait_s` while the batch is not full."""
        end = time.perf_counter() + self.max_wait_s
        while self._queued_rows < self.max_batch_size and not self._draining:
            remaining = end - time.perf_counter()
            if remaining <= 0:
                return
            self._arrival.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._arrival.wait()
            except TimeoutError:
                return
