"""The committed gRPC code is what the pinned grpcio-tools (the `test` extra) generates from the committed protos."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .support import REPO_ROOT

GENERATED = REPO_ROOT / "app/transport/grpc/generated"


def test_the_committed_grpc_code_is_what_the_generator_writes(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(REPO_ROOT / "scripts/generate_grpc.py"), "--out", str(tmp_path)],
                          check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    fresh = {path.name: path.read_text() for path in tmp_path.glob("*.py")}
    committed = {path.name: path.read_text() for path in GENERATED.glob("*.py")}
    assert sorted(fresh) == sorted(committed), "regenerate with: python scripts/generate_grpc.py"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"{stale} differ from what scripts/generate_grpc.py writes: regenerate and commit them"
