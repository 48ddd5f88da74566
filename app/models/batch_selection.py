"""Which queued requests the next batch takes (the ordering part of the batcher's contract, app.models.batcher):
the oldest always, then either the queue in order while it fits, or, when requests have lengths, the queued
requests closest in length to the oldest while the batch stays within its caps."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol, TypeVar


class Queued(Protocol):
    rows: int
    length: float  # the request's longest row (text: tokens); 0 without length bucketing


QueuedT = TypeVar("QueuedT", bound=Queued)


@dataclass(frozen=True)
class BatchCaps:
    """The most a batch may hold: rows; padded length (rows times the longest length); padding, as a fraction
    of the batch's real length."""

    max_batch_size: int
    max_padded_size: int | None = None
    max_padding: float | None = None

    def fits(self, rows: int, padded: float, real: float) -> bool:
        """Whether a batch of `rows` rows, `padded` long once padded and `real` long without, is within the caps."""
        if rows > self.max_batch_size:
            return False
        if self.max_padded_size is not None and padded > self.max_padded_size:
            return False
        return self.max_padding is None or padded <= (1 + self.max_padding) * real


def take_in_order(queue: deque[QueuedT], caps: BatchCaps) -> list[QueuedT]:
    """Pop requests from the front of `queue` while their rows fit in one batch."""
    batch: list[QueuedT] = []
    rows = 0
    while queue and rows + queue[0].rows <= caps.max_batch_size:
        pending = queue.popleft()
        batch.append(pending)
        rows += pending.rows
    return batch


def take_similar_lengths(queue: deque[QueuedT], caps: BatchCaps) -> tuple[list[QueuedT], deque[QueuedT]]:
    """The oldest request, then the queued ones nearest to it in length while they fit; and the queue left."""
    oldest = queue[0]
    batch, rows, longest = [oldest], oldest.rows, oldest.length
    real = oldest.rows * oldest.length  # the batch's length without padding (an upper bound for a list)
    by_closeness = sorted(list(queue)[1:], key=lambda pending: abs(pending.length - oldest.length))
    for pending in by_closeness:
        length = max(longest, pending.length)
        joined_rows, joined_real = rows + pending.rows, real + pending.rows * pending.length
        if not caps.fits(joined_rows, joined_rows * length, joined_real):
            continue
        batch.append(pending)
        rows, longest, real = joined_rows, length, joined_real
        if rows == caps.max_batch_size:
            break
    taken = set(map(id, batch))
    return batch, deque(pending for pending in queue if id(pending) not in taken)
