"""ONNX Runtime session settings that depend on the machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.models import runtime
from app.models.runtime import cgroup_cpu_quota, usable_cpus

from .support import REPO_ROOT


def test_usable_cpus_follows_the_cpu_affinity() -> None:
    """A server pinned to one CPU runs one intra-op thread, not one per core of the machine."""
    assert usable_cpus() == len(os.sched_getaffinity(0))
    pinned = subprocess.run(
        [sys.executable, "-c", "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
                               "from app.models.runtime import usable_cpus; print(usable_cpus())"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    )
    assert pinned.stdout.strip() == "1", pinned.stderr


def _cgroup(root: Path, files: dict[str, str]) -> Path:
    """A fake cgroup mount: `files` by path under it, each with its content."""
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content + "\n")
    return root


@pytest.mark.parametrize(("files", "quota"), [
    ({"cpu.max": "150000 100000"}, 1.5),
    ({"cpu.max": "max 100000"}, None),
    ({"cpu/cpu.cfs_quota_us": "250000", "cpu/cpu.cfs_period_us": "100000"}, 2.5),
    ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, None),
    ({}, None),
], ids=["v2", "v2-no-quota", "v1", "v1-no-quota", "no-cgroup"])
def test_the_cgroup_cpu_quota_is_read_from_v2_and_v1(tmp_path: Path, files: dict[str, str],
                                                     quota: float | None) -> None:
    assert cgroup_cpu_quota(_cgroup(tmp_path, files)) == quota


@pytest.mark.parametrize(("quota", "cpus"), [(0.5, 1), (1.0, 1), (1.2, 2), (None, None), (10_000.0, None)])
def test_a_cpu_quota_caps_the_usable_cpus_rounded_up(monkeypatch: pytest.MonkeyPatch, quota: float | None,
                                                     cpus: int | None) -> None:
    """A container limited to 1.2 CPUs runs 2 threads; no quota, or one above the affinity, leaves the affinity."""
    monkeypatch.setattr(runtime, "cgroup_cpu_quota", lambda: quota)
    affinity = len(os.sched_getaffinity(0))
    assert usable_cpus() == (min(cpus, affinity) if cpus is not None else affinity)
