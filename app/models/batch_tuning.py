"""Batch sizes chosen by measurement: time a model at batch sizes 1, 2, 4, ... at warm-up, and cap batches
at the largest size that keeps items per second near the best measured.

Bigger batches are not always faster per item on a CPU (docs/benchmarks.md), and a batch past that point only
makes its requests wait longer. On a plateau the largest size is kept: it costs nothing per item and the fewer
batches save per-batch overhead.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

Key = TypeVar("Key", bound=Hashable)

# A size is kept while its items per second stay within this share of the best size's (measurement noise
# on a shared machine is about this size, so a flat curve still keeps its largest size).
TOLERANCE = 0.95
# Each size is timed for at least this long, over at least MIN_RUNS runs; the fastest run counts.
MIN_SECONDS_PER_SIZE = 0.2
MIN_RUNS = 3


@dataclass(frozen=True)
class BatchTiming:
    """The fastest run of one batch size."""

    batch_size: int
    seconds_per_batch: float

    @property
    def items_per_s(self) -> float:
        return self.batch_size / self.seconds_per_batch


def candidate_sizes(max_batch_size: int) -> list[int]:
    """1, 2, 4, ... up to `max_batch_size`, which is always included."""
    sizes = [1]
    while sizes[-1] * 2 < max_batch_size:
        sizes.append(sizes[-1] * 2)
    return sorted({*sizes, max_batch_size})


def measure(run_batch: Callable[[int], None], sizes: list[int]) -> list[BatchTiming]:
    """Time `run_batch(size)` for each size: the fastest of its runs (`fastest_runs`)."""
    fastest = fastest_runs({size: partial(run_batch, size) for size in sizes})
    return [BatchTiming(size, fastest[size]) for size in sizes]


def fastest_runs(runs: Mapping[Key, Callable[[], None]]) -> dict[Key, float]:
    """The seconds of each callable's fastest run, so background load counts least.

    The callables take turns (MIN_RUNS rounds over all of them, each run for at least its share of
    MIN_SECONDS_PER_SIZE per round), so a burst of load from elsewhere slows every one a little rather than
    one a lot: on a flat curve a noisy batch size would otherwise cap batches far below the plateau
    (docs/benchmarks.md).
    """
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(MIN_RUNS):
        for key, run in runs.items():
            started = time.perf_counter()
            while True:
                begin = time.perf_counter()
                run()
                finished = time.perf_counter()
                best[key] = min(best[key], finished - begin)
                if finished - started >= MIN_SECONDS_PER_SIZE / MIN_RUNS:
                    break
    return best


def best_batch_size(curve: list[BatchTiming]) -> int:
    """The largest size whose items per second reach TOLERANCE of the best size's."""
    best = max(timing.items_per_s for timing in curve)
    return max(timing.batch_size for timing in curve if timing.items_per_s >= TOLERANCE * best)
