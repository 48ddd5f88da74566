"""`process_*` metrics of several processes at once, for the worker processes of one service."""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable

from prometheus_client import ProcessCollector
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector


class ProcessesCollector(Collector):
    """`process_*` metrics summed over the processes `pids()` names (CPU seconds, memory, open files), under the
    names a single process exports, so dashboards read the same series either way."""

    def __init__(self, pids: Callable[[], Iterable[int]]) -> None:
        self.pids = pids

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        for pid in self.pids():
            for family in ProcessCollector(pid=lambda pid=pid: pid, registry=None).collect():
                kept = families.setdefault(family.name, family)
                if kept is family:
                    continue
                combine = min if family.name.endswith(("start_time_seconds", "max_fds")) else operator.add
                (total,), (sample,) = kept.samples, family.samples
                kept.samples[0] = total._replace(value=combine(total.value, sample.value))
        yield from families.values()
