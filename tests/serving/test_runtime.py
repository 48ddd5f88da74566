"""ONNX Runtime session settings that depend on the machine."""

from __future__ import annotations

import os
import subprocess
import sys

from app.runtime import usable_cpus

from .support import REPO_ROOT


def test_usable_cpus_follows_the_cpu_affinity() -> None:
    """A server pinned to one CPU runs one intra-op thread, not one per core of the machine."""
    assert usable_cpus() == len(os.sched_getaffinity(0))
    pinned = subprocess.run(
        [sys.executable, "-c", "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
                               "from app.runtime import usable_cpus; print(usable_cpus())"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    )
    assert pinned.stdout.strip() == "1", pinned.stderr
