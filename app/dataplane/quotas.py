"""Per-key quotas: a token bucket (`rate_per_s`, `burst`) and a count of requests in flight (`max_in_flight`) for
each key with `Limits` (app.dataplane.keys), one of each per service instance however many workers serve it.

`Quotas.admit(key, model)` takes a token and an in-flight place for one request of `key` to `model`, or raises
`RateLimited`; the `Admission` it returns gives the place back when its `with` block ends, however the request
ended. A key's limits cover all its models together. Keys without limits, and requests that need no key, touch
nothing.

The state is a small table of rows, one per key id (so keys may come and go with rotation), each holding the
bucket (tokens, the `time.monotonic()` of its last refill: CLOCK_MONOTONIC is system-wide on Linux) and one
in-flight count per process column. With several workers (app.topology.workers) the table is a file in their
shared directory, which every worker maps into memory and admits requests in under an exclusive `flock` (a
worker gives a place back in its own column, without the lock): the limit is the instance's, shared, not divided
among the workers (divided, a client whose keep-alive connection lands on one worker would get a fraction of its
limit). Each process takes a column of its own at start-up, clearing the columns of processes that died, so a
worker that dies mid-request leaks no counts. Alone, a process keeps the same table in private memory. A full
table reuses the row of the idle key used longest ago.

No library: pyrate-limiter shares state between processes only through SQLite (a row written per request) or a
multiprocessing manager (a round trip to its server per request) and counts nothing in flight; `limits` shares
only through Redis, Memcached or MongoDB.
"""

from __future__ import annotations

import fcntl
import math
import mmap
import os
import struct
import time
import zlib
from pathlib import Path
from types import TracebackType
from typing import Self

from app.dataplane.keys import MAX_KEYS, Key
from app.errors import RateLimited
from app.topology.workers import process_alive

_MAGIC = b"mskquota"
_HEADER = struct.Struct("<8sII")  # magic, columns, rows
_PID = struct.Struct("<q")
_ID = struct.Struct("<64s")  # a key id: at most 64 ASCII characters (app.dataplane.keys.KeyEntry)
_BUCKET = struct.Struct("<dd")  # tokens, refilled at (monotonic seconds)
_USED_AT = struct.Struct("<d")
_COUNT = struct.Struct("i")  # native: one aligned 4-byte load or store (the standard "<i" goes byte by byte)
_BUCKET_AT, _USED_AT_AT, _COUNTS_AT = 64, 80, 88  # offsets within a row, whose size and start are multiples of 4


class Admission:
    """One admitted request's in-flight place, given back when the `with` block ends."""

    __slots__ = ("_quotas", "_row")

    def __init__(self, quotas: Quotas | None, row: int) -> None:
        self._quotas = quotas
        self._row = row

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._quotas is not None:
            self._quotas.release(self._row)


_NOTHING_HELD = Admission(None, -1)


class Quotas:
    """The quota table of this service instance, as seen by one process (its column)."""

    def __init__(self, memory: mmap.mmap, lock_fd: int | None, columns: int, rows: int, column: int) -> None:
        self._memory = memory
        self._lock_fd = lock_fd  # None: private memory, no other process
        self._columns = columns
        self._rows = rows
        self._column = column
        self._row_size = _COUNTS_AT + _COUNT.size * columns
        self._rows_at = _HEADER.size + _PID.size * columns
        self._counts = struct.Struct(f"{columns}i")  # native, as _COUNT
        self._row_of: dict[str, int] = {}  # this process's memo of each id's row, checked on use

    @classmethod
    def private(cls, rows: int = MAX_KEYS) -> Quotas:
        """The table of a service instance that is one process."""
        memory = mmap.mmap(-1, cls._size(1, rows))
        _HEADER.pack_into(memory, 0, _MAGIC, 1, rows)
        _PID.pack_into(memory, _HEADER.size, os.getpid())
        return cls(memory, None, 1, rows, 0)

    @classmethod
    def shared(cls, path: Path, processes: int, rows: int = MAX_KEYS) -> Quotas:
        """This process's view of the table in the file `path` that the instance's `processes` worker processes
        share (made by whichever comes first); room for twice as many, so that a replacement can start while
        the worker it replaces is being reaped."""
        columns = 2 * processes
        size = cls._size(columns, rows)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.fstat(fd).st_size == 0:
                os.ftruncate(fd, size)
                os.pwrite(fd, _HEADER.pack(_MAGIC, columns, rows), 0)
            elif os.pread(fd, _HEADER.size, 0) != _HEADER.pack(_MAGIC, columns, rows):
                raise RuntimeError(f"{path} is not a quota table of {columns} columns and {rows} rows")
            memory = mmap.mmap(fd, size)
            quotas = cls(memory, fd, columns, rows, -1)
            quotas._column = quotas._take_column()
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
        return quotas

    @staticmethod
    def _size(columns: int, rows: int) -> int:
        return _HEADER.size + _PID.size * columns + (_COUNTS_AT + _COUNT.size * columns) * rows

    def _take_column(self) -> int:
        """Clear the columns of processes that are gone (this pid's included: a stale one), then take a free one."""
        me = os.getpid()
        free = None
        for column in range(self._columns):
            at = _HEADER.size + _PID.size * column
            (pid,) = _PID.unpack_from(self._memory, at)
            if pid != 0 and (pid == me or not process_alive(pid)):
                for row in range(self._rows):
                    _COUNT.pack_into(self._memory, self._rows_at + row * self._row_size + _COUNTS_AT
                                     + _COUNT.size * column, 0)
                _PID.pack_into(self._memory, at, 0)
                pid = 0
            if pid == 0 and free is None:
                free = column
        if free is None:
            raise RuntimeError(f"the quota table has no free column: {self._columns} live processes use it")
        _PID.pack_into(self._memory, _HEADER.size + _PID.size * free, me)
        return free

    def admit(self, key: Key | None, model: str) -> Admission:
        """Take a token of `key`'s bucket and a place among its requests in flight, for a request to `model`;
        `RateLimited` (naming the key, its limit and the model) when either is used up. The bucket is left
        untouched when the in-flight limit refuses."""
        if key is None or key.limits is None:
            return _NOTHING_HELD
        limits = key.limits
        memory = self._memory
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            now = time.monotonic()
            at = self._row(key.id, now)
            if limits.max_in_flight is not None:
                in_flight = sum(self._counts.unpack_from(memory, at + _COUNTS_AT))
                if in_flight >= limits.max_in_flight:
                    raise RateLimited(f"key {key.id!r} has {in_flight} requests in flight, its limit "
                                      f"(max_in_flight {limits.max_in_flight}); request for model {model!r} refused",
                                      retry_after_s=1.0)
            if limits.rate_per_s is not None:
                assert limits.burst is not None
                tokens, refilled_at = _BUCKET.unpack_from(memory, at + _BUCKET_AT)
                tokens = min(float(limits.burst), tokens + (now - refilled_at) * limits.rate_per_s)
                if tokens < 1.0:
                    _BUCKET.pack_into(memory, at + _BUCKET_AT, tokens, now)
                    raise RateLimited(f"key {key.id!r} is over its rate limit of {limits.rate_per_s:g} requests/s "
                                      f"(burst {limits.burst}); request for model {model!r} refused",
                                      retry_after_s=(1.0 - tokens) / limits.rate_per_s)
                _BUCKET.pack_into(memory, at + _BUCKET_AT, tokens - 1.0, now)
            if limits.max_in_flight is None:
                return _NOTHING_HELD
            count_at = at + _COUNTS_AT + _COUNT.size * self._column
            _COUNT.pack_into(memory, count_at, _COUNT.unpack_from(memory, count_at)[0] + 1)
            return Admission(self, count_at)
        finally:
            if self._lock_fd is not None:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def release(self, count_at: int) -> None:
        """Give back the in-flight place counted at `count_at`, this process's count in a key's row. Without the
        lock: only this process writes its column (the row is not reassigned while the count is above 0, and a
        column is cleared only once its process is dead), and the count is one aligned native int, which other
        processes read whole, the old value or the new."""
        _COUNT.pack_into(self._memory, count_at, _COUNT.unpack_from(self._memory, count_at)[0] - 1)

    def _row(self, key_id: str, now: float) -> int:
        """The offset of `key_id`'s row, taken for it if it has none (with a full bucket); its use noted."""
        wanted = _ID.pack(key_id.encode())
        memory = self._memory
        at = self._row_of.get(key_id)
        if at is None or memory[at:at + 64] != wanted:
            at = self._find_or_take(wanted, now)
            self._row_of[key_id] = at
        _USED_AT.pack_into(memory, at + _USED_AT_AT, now)
        return at

    def _find_or_take(self, wanted: bytes, now: float) -> int:
        """Open addressing from the id's hash: rows are never emptied, only reassigned when none is empty, so a
        probe that meets an empty row may stop there."""
        start = zlib.crc32(wanted) % self._rows
        for probe in range(self._rows):
            at = self._rows_at + ((start + probe) % self._rows) * self._row_size
            found = self._memory[at:at + 64]
            if found == wanted:
                return at
            if found[0] == 0:
                self._assign(at, wanted, now)
                return at
        at = self._idle_row_used_longest_ago()
        self._assign(at, wanted, now)
        return at

    def _idle_row_used_longest_ago(self) -> int:
        oldest, oldest_at = math.inf, -1
        for row in range(self._rows):
            at = self._rows_at + row * self._row_size
            (used_at,) = _USED_AT.unpack_from(self._memory, at + _USED_AT_AT)
            if used_at < oldest and not any(self._counts.unpack_from(self._memory, at + _COUNTS_AT)):
                oldest, oldest_at = used_at, at
        if oldest_at < 0:
            raise RuntimeError(f"the quota table's {self._rows} rows all have requests in flight")
        return oldest_at

    def _assign(self, at: int, wanted: bytes, now: float) -> None:
        self._memory[at:at + self._row_size] = bytes(self._row_size)
        _ID.pack_into(self._memory, at, wanted)
        _BUCKET.pack_into(self._memory, at + _BUCKET_AT, math.inf, now)  # full: the refill caps it at the burst
