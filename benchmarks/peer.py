#!/usr/bin/env python3
"""Peer benchmark: the service next to the in-process ONNX Runtime ceiling, a trivial FastAPI endpoint and a
naive FastAPI server (`def` and `async def`), on the same model files and the same inputs, in one run.

    .venv/bin/python benchmarks/build_models.py     # once: resnet18 and minilm-l6 into benchmarks/results/models
    .venv/bin/python benchmarks/peer.py             # every model and server
    .venv/bin/python benchmarks/peer.py --quick     # smoke test: 1 s cells, correctness only
    .venv/bin/python benchmarks/peer.py --models mnist-cnn --servers naive-def service --reverse

For each model, servers run one after another (`--servers` order, or reversed with `--reverse`), each started on
a free 127.0.0.1 port and loaded at every `--concurrency` level and then at the lowest level again (hysteresis);
the ceiling (best `session.run` batch size) is measured before the first server and after each one. The load
generator runs in this process, pinned to its own CPU; the servers are pinned to the others. Results: a table on
stdout, benchmarks/results/peer-<time>.{json,md} and one plot per model in docs/benchmarks/. Exit status: 1 if a
request failed or the answers differ, 2 if a model is missing. This file holds the options and the run; the parts
are in the `peer` package beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from inputs import IMAGE_INPUTS, InputSet, input_set
from peer import REPO
from peer.cases import BUILT_MODELS, CASES, missing_models, model_directory
from peer.load import run_case
from peer.report import git_commit, machine_info, markdown, plot
from peer.servers import DEFAULT_SERVERS, SERVERS, service_settings


def cpu_list(text: str) -> set[int]:
    """`0`, `1-3` or `0,2` as a set of CPU numbers."""
    cpus: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options, with the --quick defaults filled in and --reverse applied to the server order."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--models", nargs="+", choices=list(CASES), default=list(CASES),
        help="model cases to run (default: all; resnet18 and minilm-* need benchmarks/build_models.py first)")
    add("--servers", nargs="+", choices=SERVERS, default=list(DEFAULT_SERVERS),
        help="servers, in the order they run (default: %(default)s)")
    add("--reverse", action="store_true", help="run the servers in the reverse order (ratios under drift)")
    add("--concurrency", nargs="+", type=int, default=[1, 8, 32, 128],
        help="closed-loop connections per cell; the first level runs again after the last (hysteresis)"
             " (default: %(default)s)")
    add("--duration", type=float, default=None, help="seconds of measured load per cell (default: 8, --quick: 1)")
    add("--trivial-duration", type=float, default=3.0,
        help="measured window of the trivial server's cells, at most --duration (default: %(default)s)")
    add("--warmup", type=float, default=None,
        help="seconds of unmeasured load before each cell's window (default: 2, --quick: 0.3)")
    add("--ceiling-seconds", type=float, default=None,
        help="seconds of session.run per batch size in the ceiling (default: 0.3, --quick: 0.05)")
    add("--ceiling-threads", type=int, default=None,
        help="intra-op threads of the ceiling's session (default: one per server CPU; 0: ONNX Runtime's choice)")
    add("--quick", action="store_true",
        help="smoke test: 1 s windows after 0.3 s warm-up, 0.05 s per ceiling batch size; correctness only")
    add("--builtin-sentences", action="store_true",
        help="send the built-in sentences even when ../shared/data/sst2/dev.tsv exists (hermetic tests)")
    add("--server-env", action="append", default=[], metavar="SERVE_X=VALUE",
        help="a setting for the service (repeatable); the naive servers read the ONNX Runtime ones too")
    add("--api-key", metavar="KEY",
        help="send this key (X-API-Key) with every request to the services, e.g. with --server-env "
             "SERVE_API_KEYS_FILE=keys.toml to measure keys and their quotas")
    add("--service-env", action="append", default=[], metavar="NAME=VALUE",
        help="an environment variable of the service under test only, not of service-baseline (repeatable): a "
             "setting measured against the same code without it, e.g. OTEL_* for tracing")
    add("--baseline", type=Path, metavar="DIR",
        help="the checkout whose service runs as `service-baseline` (e.g. `git worktree add /tmp/before HEAD~3`)")
    add("--client-cpus", type=cpu_list, default=None, help="CPUs of the load generator (default: the first)")
    add("--server-cpus", type=cpu_list, default=None, help="CPUs of the servers (default: all the others)")
    add("--built-models-dir", type=Path, default=BUILT_MODELS, help="where build_models.py wrote its models (default: %(default)s)")
    add("--results-dir", type=Path, default=REPO / "benchmarks" / "results", help="JSON and Markdown results (default: %(default)s)")
    add("--plots-dir", type=Path, default=REPO / "docs" / "benchmarks", help="one PNG per model case (default: %(default)s)")
    add("--no-plots", action="store_true", help="write no plots")
    add("--replot", type=Path, metavar="RESULTS.json",
        help="only redraw the plots (into --plots-dir) and reprint the tables of an earlier results file")
    args = parser.parse_args(argv)
    for name, normal, quick in (("duration", 8.0, 1.0), ("warmup", 2.0, 0.3), ("ceiling_seconds", 0.3, 0.05)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else normal)
    if args.reverse:
        args.servers = args.servers[::-1]
    images = [name for name in args.models if CASES[name].inputs in IMAGE_INPUTS]
    if "service-v2-json" in args.servers and images:
        parser.error(f"service-v2-json sends texts only (JSON cannot carry an encoded image): leave out"
                     f" {' '.join(images)}, or load them through service-v2-binary or service-grpc")
    if ("service-baseline" in args.servers) != (args.baseline is not None):
        parser.error("--baseline DIR and the server service-baseline go together")
    if args.baseline is not None and not (args.baseline / "app" / "__main__.py").is_file():
        parser.error(f"--baseline {args.baseline}: no app/__main__.py there")
    for option, items in (("--server-env", args.server_env), ("--service-env", args.service_env)):
        for item in items:
            if "=" not in item:
                parser.error(f"{option} {item!r}: expected NAME=VALUE")
    return args


def pinning(args: argparse.Namespace) -> tuple[set[int], set[int]]:
    """(client CPUs, server CPUs): the first usable CPU for the client, the others for the servers."""
    usable = sorted(os.sched_getaffinity(0))
    client = args.client_cpus or {usable[0]}
    servers = args.server_cpus or (set(usable) - client if len(usable) > 1 else set(usable))
    return client, servers


async def run_all(args: argparse.Namespace) -> dict[str, Any]:
    """Every case asked for, in order: the results document (machine, settings, cases, skipped cases)."""
    started = time.perf_counter()
    load_at_start = os.getloadavg()
    started_at, commit_at_start = dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), git_commit()
    client, servers = pinning(args)
    os.sched_setaffinity(0, client)
    settings = service_settings(args)
    print(f"load generator on CPU {sorted(client)}, servers on CPU {sorted(servers)}; load average"
          f" {', '.join(f'{x:.2f}' for x in load_at_start)}", flush=True)
    cases = [(CASES[name], model_directory(CASES[name], args)) for name in args.models]
    skipped: dict[str, str] = {}
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="peer-") as tmp:
        input_sets: dict[str, InputSet] = {}
        for case, directory in cases:
            if case.inputs not in input_sets:
                input_sets[case.inputs] = input_set(case.inputs, case.count, args.builtin_sentences)
            try:
                results.append(await run_case(case, directory, input_sets[case.inputs], args, servers, settings,
                                              Path(tmp), client))
            except RuntimeError as exc:
                print(f"{case.name} failed: {exc}", file=sys.stderr)
                skipped[case.name] = str(exc)[:2000]
    summary_settings = {key: str(value) if isinstance(value, Path) else sorted(value) if isinstance(value, set)
                        else value for key, value in vars(args).items()}
    return {"machine": machine_info(load_at_start, client, servers, started_at, commit_at_start),
            "settings": summary_settings,
            "skipped": skipped, "cases": results, "elapsed_s": time.perf_counter() - started}


def main(argv: list[str] | None = None) -> int:
    """Run (or only replot), write the results and plots; the exit status of the module docstring."""
    args = parse_args(argv)
    if args.replot:
        results = json.loads(args.replot.read_text())
        for case in results["cases"]:
            print(f"wrote {plot(case, results['machine'], args.plots_dir)}")
        print("\n" + markdown(results))
        return 0
    missing = missing_models(args)
    if missing:
        bundled = " ".join(name for name, case in CASES.items() if not case.built)
        print(f"peer.py: no model {'; no model '.join(missing)}. Or leave those cases out with --models "
              f"(the bundled models' cases: {bundled}).", file=sys.stderr)
        return 2
    try:
        import uvloop
    except ImportError:
        results = asyncio.run(run_all(args))
    else:
        results = uvloop.run(run_all(args))
    report = markdown(results)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stem = args.results_dir / f"peer-{dt.datetime.now():%Y%m%d-%H%M%S}{'-quick' if args.quick else ''}"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    stem.with_suffix(".md").write_text(report)
    if not args.no_plots:
        for case in results["cases"]:
            print(f"wrote {plot(case, results['machine'], args.plots_dir)}")
    print("\n" + report)
    print(f"wrote {stem}.json and {stem}.md ({results['elapsed_s'] / 60:.1f} min)")
    errors = sum(cell["errors"] for case in results["cases"] for cell in case["cells"])
    wrong = [case["case"]["name"] for case in results["cases"] if case["correctness"].get("ok") is False]
    if errors or wrong or results["skipped"] and not results["cases"]:
        print(f"FAILED: {errors} errors; answers differ for {wrong or 'no model'}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
