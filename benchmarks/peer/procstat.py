"""CPU time, CPU wait, peak memory and CPU affinity of a process tree, and busy time of CPUs, read from /proc."""

from __future__ import annotations

import os
import re
from pathlib import Path

from loadgen import sched_waits

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")



def proc_tree(root: int) -> list[int]:
    """`root` and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat[stat.rfind(")") + 2:].split()[1]), []).append(int(entry.name))
    tree, stack = [], [root]
    while stack:
        pid = stack.pop()
        tree.append(pid)
        stack += children.get(pid, [])
    return tree


def tree_cpu_s(root: int) -> float:
    """User + system CPU seconds of the process tree (all threads)."""
    total = 0
    for pid in proc_tree(root):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def cpu_busy_s(cpus: set[int]) -> float:
    """Seconds the given CPUs were busy (or stolen by the hypervisor) since boot, from /proc/stat."""
    busy = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            ticks = [int(value) for value in fields]
            busy += sum(ticks[:8]) - ticks[3] - ticks[4]  # all but idle and iowait (guest time is in user)
    return busy / CLOCK_TICKS


def tree_waits(root: int) -> dict[str, int]:
    """Nanoseconds each thread of the tree spent runnable but waiting for a CPU (see `loadgen.sched_waits`)."""
    waits: dict[str, int] = {}
    for pid in proc_tree(root):
        waits.update(sched_waits(pid))
    return waits


def tree_peak_rss_mb(root: int) -> float | None:
    """Sum over the tree of each process's peak resident set (VmHWM)."""
    total = 0
    for pid in proc_tree(root):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        total += int(match[1]) if match else 0
    return total / 1024 or None


def thread_affinities(root: int) -> set[str]:
    """The distinct `Cpus_allowed_list` of every thread of the tree."""
    lists = set()
    for pid in proc_tree(root):
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                match = re.search(r"^Cpus_allowed_list:\s+(\S+)", (task / "status").read_text(), re.MULTILINE)
            except OSError:
                continue
            if match:
                lists.add(match[1])
    return lists
