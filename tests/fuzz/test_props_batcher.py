"""Property test of the batcher: any interleaving of submits, cancellations, deadlines and a drain leaves
every request answered exactly once, with its own answer, and nothing run after the drain."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from app.errors import DeadlineExceeded, QueueFull, ShuttingDown
from app.models.batcher import Batcher

LONG_DEADLINE_S = 60.0  # a request that waits this long has hung: the test gives up after SETTLE_S
SETTLE_S = 2.0


@dataclass(frozen=True)
class Job:
    """One request: its id, rows, and what the fake batch function does with it."""

    id: int
    rows: int
    length: int
    fails: bool  # the batch function answers this request with its own exception
    breaks_batch: bool  # the batch function raises for the whole batch this request is in
    cost_ms: float


class JobFailed(Exception):
    def __init__(self, job_id: int) -> None:
        super().__init__(f"job {job_id} failed")
        self.job_id = job_id


class BatchBroke(Exception):
    pass


@dataclass
class FakeModel:
    """The batch function: records each batch, sleeps a little, answers each job with its own id."""

    max_batch_size: int
    batches: list[list[int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    closed: bool = False

    def __call__(self, jobs: Sequence[Job]) -> list[Any]:
        assert not self.closed, "a batch ran after drain() returned"
        with self.lock:
            self.batches.append([job.id for job in jobs])
        assert sum(job.rows for job in jobs) <= self.max_batch_size, jobs
        time.sleep(sum(job.cost_ms for job in jobs) / 1000)
        if any(job.breaks_batch for job in jobs):
            raise BatchBroke("the whole batch broke")
        return [JobFailed(job.id) if job.fails else ("answer", job.id) for job in jobs]


@dataclass(frozen=True)
class Submit:
    rows: int
    length: int
    deadline_ms: float | None  # None: the long deadline
    fails: bool
    breaks_batch: bool
    cost_ms: float


@dataclass(frozen=True)
class Cancel:
    target: int  # index into the submits so far, modulo their count


@dataclass(frozen=True)
class Pause:
    ms: float  # 0: one turn of the event loop


@dataclass(frozen=True)
class Drain:
    pass


submits = st.builds(
    Submit,
    rows=st.integers(1, 4),
    length=st.integers(0, 50),
    deadline_ms=st.none() | st.floats(0, 20),
    fails=st.booleans(),
    breaks_batch=st.sampled_from([False] * 9 + [True]),
    cost_ms=st.sampled_from([0.0, 0.0, 0.5, 2.0]),
)
steps = st.lists(
    st.one_of(
        submits,
        submits,
        submits,
        submits,
        st.builds(Cancel, st.integers(0, 100)),
        st.builds(Pause, st.sampled_from([0.0, 0.0, 0.5, 3.0])),
    ),
    min_size=4,
    max_size=40,
)


@st.composite
def operations(draw: st.DrawFn) -> list[Any]:
    """Steps with a drain somewhere among them, mostly late (a drain first tests little but refusal)."""
    program = draw(steps)
    at = len(program) - min(draw(st.integers(0, len(program))), draw(st.integers(0, len(program))))
    return [*program[:at], Drain(), *program[at:]]


configs = st.fixed_dictionaries(
    {
        "max_batch_size": st.integers(4, 8),
        "max_queue_size": st.integers(1, 10),
        "max_wait_s": st.sampled_from([0.0, 0.0, 0.002]),
        "bucketing": st.booleans(),
        "inline": st.none() | st.lists(st.booleans(), min_size=1, max_size=5),
    }
)


async def run_program(program: list[Any], config: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    loop_errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
    model = FakeModel(config["max_batch_size"])
    inline_answers = itertools.cycle(config["inline"] or [False])
    batcher: Batcher[Job, Any] = Batcher(
        "fake",
        model,
        max_batch_size=config["max_batch_size"],
        max_queue_size=config["max_queue_size"],
        max_wait_s=config["max_wait_s"],
        on_batch=lambda rows, waits: None,
        on_queue_change=lambda depth: None,
        run_inline=(lambda rows: next(inline_answers)) if config["inline"] else None,
        length_of=(lambda job: job.length) if config["bucketing"] else None,
    )
    batcher.start()
    tasks: list[asyncio.Task[Any]] = []
    jobs: list[Job] = []
    cancelled: set[int] = set()
    drain_task: asyncio.Task[None] | None = None
    for operation in program:
        if isinstance(operation, Submit):
            job = Job(
                len(jobs),
                operation.rows,
                operation.length,
                operation.fails,
                operation.breaks_batch,
                operation.cost_ms,
            )
            deadline_s = LONG_DEADLINE_S if operation.deadline_ms is None else operation.deadline_ms / 1000
            jobs.append(job)
            tasks.append(loop.create_task(batcher.submit(job, job.rows, time.perf_counter() + deadline_s)))
        elif isinstance(operation, Cancel) and tasks:
            index = operation.target % len(tasks)
            if not tasks[index].done():
                tasks[index].cancel()
                cancelled.add(index)
        elif isinstance(operation, Pause):
            await asyncio.sleep(operation.ms / 1000)
        elif isinstance(operation, Drain) and drain_task is None:
            drain_task = loop.create_task(batcher.drain())
    if drain_task is None:
        drain_task = loop.create_task(batcher.drain())
    _, pending = await asyncio.wait([*tasks, drain_task], timeout=SETTLE_S)
    model.closed = True
    assert not pending, (
        f"{len(pending)} requests or the drain never finished: {[t.get_coro() for t in pending]}"
    )
    assert drain_task.exception() is None
    check_outcomes(jobs, tasks, cancelled, model)
    assert not loop_errors, loop_errors


def check_outcomes(
    jobs: list[Job], tasks: list[asyncio.Task[Any]], cancelled: set[int], model: FakeModel
) -> None:
    """Each request ended once, with its own answer or a documented error; none ran twice."""
    ran = [job_id for batch in model.batches for job_id in batch]
    assert len(ran) == len(set(ran)), f"a request ran twice: {model.batches}"
    for index, (job, task) in enumerate(zip(jobs, tasks, strict=True)):
        if task.cancelled():
            assert index in cancelled, f"request {index} was cancelled by nobody"
            continue
        error = task.exception()
        if error is None:
            assert task.result() == ("answer", job.id), (job, task.result())
            assert job.id in ran
        elif isinstance(error, JobFailed):
            assert error.job_id == job.id and job.fails and job.id in ran
        elif isinstance(error, BatchBroke):
            assert job.id in ran
        else:
            assert isinstance(error, DeadlineExceeded | QueueFull | ShuttingDown), repr(error)


@given(operations(), configs)
def test_every_request_is_answered_exactly_once(program: list[Any], config: dict[str, Any]) -> None:
    asyncio.run(run_program(program, config))
