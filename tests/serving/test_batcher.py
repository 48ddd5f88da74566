"""The batcher on its own, with a stand-in batch function: length bucketing and fairness.

(The end-to-end tests drive it through a real server; here the order of batches is what is checked.)
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

from app.errors import DeadlineExceeded
from app.models.batcher import Batcher

MAX_BATCH = 4


def run_batches(lengths: list[int], length_aware: bool, max_batch_size: int = MAX_BATCH,
                **options: Any) -> list[list[int]]:
    """Queue one request per length while a first batch blocks the worker, then record every batch after it
    (`options`: more Batcher arguments)."""
    batches: list[list[int]] = []
    release = threading.Event()

    def run(requests: Sequence[int]) -> list[int]:
        if not batches:
            release.wait(10)  # the first batch holds the worker until everything else is queued
        batches.append(list(requests))
        return list(requests)

    async def main() -> list[int]:
        batcher: Batcher[int, int] = Batcher("test", run, max_batch_size=max_batch_size, max_queue_size=100,
                                             length_of=(lambda length: length) if length_aware else None,
                                             **options)
        batcher.start()
        deadline = time.perf_counter() + 30
        first = asyncio.create_task(batcher.submit(-1, 1, deadline))
        await asyncio.sleep(0.05)
        rest = [asyncio.create_task(batcher.submit(length, 1, deadline)) for length in lengths]
        await asyncio.sleep(0.05)
        release.set()
        answers = await asyncio.gather(first, *rest)
        await batcher.drain()
        return answers

    answers = asyncio.run(main())
    assert answers == [-1, *lengths], "every request gets its own answer"
    return batches[1:]


LENGTHS = [10, 200, 12, 190, 11, 210, 13, 180, 205, 9, 195, 14]


def test_queued_requests_are_grouped_by_length() -> None:
    """While more than one batch waits, each batch holds similar lengths; the last one takes what is left."""
    batches = run_batches(LENGTHS, length_aware=True)
    assert sorted(length for batch in batches for length in batch) == sorted(LENGTHS)
    for batch in batches[:-1]:
        assert max(batch) - min(batch) <= 30, f"a batch mixes short and long requests: {batches}"


def test_the_oldest_request_always_goes_in_the_next_batch() -> None:
    batches = run_batches(LENGTHS, length_aware=True)
    queued = list(LENGTHS)
    for batch in batches:
        assert queued[0] in batch, f"the oldest queued request ({queued[0]}) was passed over: {batches}"
        queued = [length for length in queued if length not in batch]


def test_without_lengths_batches_are_first_come_first_served() -> None:
    batches = run_batches(LENGTHS, length_aware=False)
    assert batches == [LENGTHS[i:i + MAX_BATCH] for i in range(0, len(LENGTHS), MAX_BATCH)]


def test_a_request_past_its_deadline_gets_deadline_exceeded_and_never_runs() -> None:
    """One request waits behind a slow batch past its deadline: it fails at the deadline, not after the
    batch, and is not run afterwards; the slow batch's own request is still answered."""
    ran: list[list[str]] = []

    def run(requests: Sequence[str]) -> list[str]:
        ran.append(list(requests))
        if requests[0] == "slow":
            time.sleep(0.6)
        return list(requests)

    async def main() -> tuple[str, BaseException | str, float]:
        batcher: Batcher[str, str] = Batcher("test", run, max_batch_size=MAX_BATCH, max_queue_size=10)
        batcher.start()
        slow = asyncio.create_task(batcher.submit("slow", 1, time.perf_counter() + 30))
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        late = await asyncio.gather(batcher.submit("late", 1, started + 0.2), return_exceptions=True)
        waited = time.perf_counter() - started
        answer = await slow
        await batcher.drain()
        return answer, late[0], waited

    answer, late, waited = asyncio.run(main())
    assert answer == "slow"
    assert isinstance(late, DeadlineExceeded), late
    assert 0.15 < waited < 0.5, f"the deadline error came after {waited:.2f} s"
    assert ran == [["slow"]], f"a request past its deadline ran: {ran}"


def test_a_request_that_cannot_start_before_its_deadline_is_refused_at_once() -> None:
    """Once batches have shown their pace, a request whose deadline is shorter than the work queued ahead of
    it is refused at once (not at its deadline) and never runs; the queued requests are all answered."""
    ran: list[str] = []

    def run(requests: Sequence[str]) -> list[str]:
        ran.extend(requests)
        time.sleep(0.05 * len(requests))
        return list(requests)

    async def main() -> tuple[BaseException | str, float, list[str]]:
        batcher: Batcher[str, str] = Batcher("test", run, max_batch_size=1, max_queue_size=100)
        batcher.start()
        await batcher.submit("first", 1, time.perf_counter() + 30)  # the pace: 50 ms per row
        queued = [asyncio.create_task(batcher.submit(f"queued-{i}", 1, time.perf_counter() + 30))
                  for i in range(10)]
        await asyncio.sleep(0)  # each queues: about 0.5 s of work ahead of the next request
        started = time.perf_counter()
        hurried = await asyncio.gather(batcher.submit("hurried", 1, started + 0.2), return_exceptions=True)
        waited = time.perf_counter() - started
        answers = await asyncio.gather(*queued)
        await batcher.drain()
        return hurried[0], waited, answers

    hurried, waited, answers = asyncio.run(main())
    assert isinstance(hurried, DeadlineExceeded), hurried
    assert waited < 0.05, f"the refusal took {waited:.2f} s"
    assert "hurried" not in ran
    assert answers == [f"queued-{i}" for i in range(10)]


def test_a_request_claiming_the_loop_when_draining_begins_is_still_answered() -> None:
    """A lone request takes one loop turn before it runs (to let batch-mates queue). If a drain begins in that
    turn and the worker, finding the queue empty, stops, the request must run by itself rather than queue for
    a worker that is gone. Whether it would run on the loop can change within the turn (with several CPUs it
    depends on the requests in flight), so the stand-in answers differently the second time."""
    # queued (not inline) / the worker runs that batch inline / the lone request claims / ... then would queue
    inline_answers = iter([False, True, True, False, False])

    async def main() -> tuple[str, str]:
        batcher: Batcher[str, str] = Batcher("test", list, max_batch_size=MAX_BATCH, max_queue_size=10,
                                             run_inline=lambda rows: next(inline_answers))
        batcher.start()
        deadline = time.perf_counter() + 30
        first = asyncio.create_task(batcher.submit("first", 1, deadline))
        await asyncio.sleep(0)  # it queues; the worker wakes next turn and runs it on the loop
        lone = asyncio.create_task(batcher.submit("lone", 1, deadline))  # claims right after that batch
        drain = asyncio.create_task(batcher.drain())  # in the same turn as the claim
        done, _ = await asyncio.wait([first, lone], timeout=2)
        assert lone in done, "the request was queued after the worker had stopped, and never answered"
        await drain
        return first.result(), lone.result()

    assert asyncio.run(main()) == ("first", "lone")


def test_batches_run_on_the_event_loop_still_form_from_concurrent_requests() -> None:
    """With `run_inline` saying yes (one CPU, a fast model), batches run on the loop's own thread, and the
    requests that arrive while one runs still go together into the next batch, each with its own answer."""
    batches: list[list[int]] = []
    threads: set[str] = set()

    def run(requests: Sequence[int]) -> list[int]:
        threads.add(threading.current_thread().name)
        batches.append(list(requests))
        time.sleep(0.01)  # a short model: requests keep arriving while it runs
        return [request * 10 for request in requests]

    async def client(batcher: Batcher[int, int], first: int, deadline: float) -> list[int]:
        return [await batcher.submit(request, 1, deadline) for request in range(first, first + 5)]

    async def main() -> list[list[int]]:
        batcher: Batcher[int, int] = Batcher("test", run, max_batch_size=MAX_BATCH, max_queue_size=100,
                                             run_inline=lambda rows: True)
        batcher.start()
        deadline = time.perf_counter() + 30
        answers = await asyncio.gather(*(client(batcher, first, deadline) for first in range(0, 40, 5)))
        await batcher.drain()
        return answers

    answers = asyncio.run(main())
    assert answers == [[request * 10 for request in range(first, first + 5)] for first in range(0, 40, 5)]
    assert threads == {threading.main_thread().name}, "every batch ran on the event loop's thread"
    assert max(map(len, batches)) == MAX_BATCH, f"requests queued during a batch were not batched: {batches}"
    assert sum(map(len, batches)) == 40


def test_the_padded_size_cap_fits_more_short_requests_than_long_ones() -> None:
    """With `max_padded_size`, rows x the longest length in a batch stays within it: short texts share a
    batch by the dozen, long ones go a few at a time."""
    short, long = [10] * 12, [100] * 4
    queued = run_batches(long + short, length_aware=True, max_batch_size=16, max_padded_size=200)
    assert sorted(length for batch in queued for length in batch) == sorted(long + short)
    assert all(len(batch) * max(batch) <= 200 for batch in queued), queued
    assert [10] * 12 in queued, f"the short requests should fill one batch: {queued}"


def test_with_a_padding_bound_a_mixed_queue_runs_as_batches_of_like_lengths() -> None:
    """With `max_padding`, a queue that one batch could hold runs as several, each padded by at most that
    fraction of its real length, and the oldest request still goes first."""
    lengths = [10, 100, 12, 90, 11, 110, 13, 95]
    queued = run_batches(lengths, length_aware=True, max_batch_size=16, max_padding=0.25)
    assert sorted(length for batch in queued for length in batch) == sorted(lengths)
    assert all(len(batch) * max(batch) <= 1.25 * sum(batch) for batch in queued), queued
    assert queued[0][0] == lengths[0], f"the oldest request did not go first: {queued}"
    assert sorted(queued[0]) == [10, 11, 12, 13], f"the short requests should share the first batch: {queued}"
