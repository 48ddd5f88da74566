"""The one-command GPU benchmark (benchmarks/gpu/), as far as it runs without a GPU.

The bundle's pieces join back into the very files packed, and a damaged or missing piece stops the install
with its name. The dry run goes through the whole command on the CPU: the preflight session, peer.py with the
naive server and the service with 1 and 4 workers and the inference process, all answering without errors,
and the nvidia-smi sampling and its summary (here against a stand-in nvidia-smi that prints fixed readings,
since this machine has none).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks" / "gpu"))

import bundle
import run

# Fixed readings in nvidia-smi's CSV (noheader, nounits) for the queries run.py makes.
FAKE_NVIDIA_SMI = """#!/bin/sh
case "$*" in
  *compute-apps*) echo "4242, 312" ;;
  *timestamp*) echo "2026/12/04 23:00:00.000, 37, 1500, 143771, 120.50" ;;
  *) echo "Stand-in GPU, 580.00, 143771 MiB" ;;
esac
"""


def test_the_pieces_join_into_what_was_packed(tmp_path: Path) -> None:
    source = tmp_path / "source"
    (source / "models" / "m" / "1").mkdir(parents=True)
    wheel = source / "demo-1.0-py3-none-any.whl"
    wheel.write_bytes(os.urandom(5000))
    (source / "models" / "m" / "1" / "model.onnx").write_bytes(os.urandom(3000))
    pieces = bundle.pack([(wheel, f"wheels/{wheel.name}"), (source / "models" / "m", "models/m")],
                         tmp_path / "pieces", piece_bytes=4096)
    assert len(pieces) >= 3 and all(piece.stat().st_size <= 4096 for piece in pieces)

    unpacked = run.unpack(tmp_path / "pieces", tmp_path / "work")
    assert (unpacked / "wheels" / wheel.name).read_bytes() == wheel.read_bytes()
    assert (unpacked / "models" / "m" / "1" / "model.onnx").read_bytes() == \
        (source / "models" / "m" / "1" / "model.onnx").read_bytes()

    damaged = tmp_path / "damaged"
    bundle.pack([(wheel, f"wheels/{wheel.name}")], damaged, piece_bytes=4096)
    piece = damaged / "bundle.tar.001"
    piece.write_bytes(piece.read_bytes()[:-1] + b"?")
    with pytest.raises(SystemExit, match="piece bundle.tar.001 does not match SHA256SUMS"):
        run.unpack(damaged, tmp_path / "work-damaged")
    piece.unlink()
    with pytest.raises(SystemExit, match="piece bundle.tar.001 is missing"):
        run.unpack(damaged, tmp_path / "work-damaged")


def test_the_requirements_ask_for_cuda_and_cudnn_from_wheels_unless_told_not_to() -> None:
    assert any(line.startswith("onnxruntime-gpu[cuda,cudnn]") for line in bundle.requirements(cuda_wheels=True))
    without = bundle.requirements(cuda_wheels=False)
    assert any(line.startswith("onnxruntime-gpu") for line in without) and not any("[cuda" in line for line in without)
    assert not any(line.startswith(("onnxruntime>", "torch")) for line in without)


def test_the_dry_run_goes_through_the_whole_command(tmp_path: Path) -> None:
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text(FAKE_NVIDIA_SMI)
    fake.chmod(0o755)
    results = tmp_path / "results"
    command = [sys.executable, str(REPO / "benchmarks" / "gpu" / "run.py"), "--dry-run", "--results", str(results),
               "--models", "sst2-textcnn", "--concurrency", "1",
               # Other work on this machine can leave a request unread past the default 0.5 s, which the service
               # then sheds with 503: that is its overload guard, not the plumbing checked here.
               "--server-env", "SERVE_OVERLOAD_WAIT_S=30"]
    env = {**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"run.py failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"

    environment = (results / "environment.txt").read_text()
    assert "gpu: Stand-in GPU" in environment and "['CPUExecutionProvider']" in environment, environment
    (peer_json,) = results.glob("peer-*-quick.json")
    data = json.loads(peer_json.read_text())
    (case,) = data["cases"]
    servers = {cell["server"] for cell in case["cells"]}
    assert servers == set(run.SERVERS), servers
    assert all(cell["errors"] == 0 and cell["ok"] > 0 for cell in case["cells"]), case["cells"]
    assert case["correctness"]["ok"], case["correctness"]

    with (results / "gpu-samples.csv").open() as samples:
        phases = {row["phase"] for row in csv.DictReader(samples)}
    assert {f"sst2-textcnn {server}" for server in run.SERVERS} <= phases, phases
    summary = (results / "summary.md").read_text()
    for server in run.SERVERS:
        assert f"| sst2-textcnn {server} |" in summary, summary
    assert "| 37 | 37 | 1500 | 1 | 312 |" in summary, summary
    assert (results / "peer.log").read_text().count("ready in") == len(run.SERVERS)
