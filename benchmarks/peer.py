#!/usr/bin/env python3
"""Peer benchmark: the service next to the in-process ONNX Runtime ceiling, a trivial FastAPI endpoint and a
naive FastAPI server (`def` and `async def`), on the same model files and the same inputs, in one run.

    .venv/bin/python benchmarks/build_models.py     # once: resnet18 and minilm-l6 into benchmarks/results/models
    .venv/bin/python benchmarks/peer.py             # every model and server, ~20 min on 2 cores
    .venv/bin/python benchmarks/peer.py --quick     # smoke test: 1 s cells, correctness only
    .venv/bin/python benchmarks/peer.py --models mnist-cnn --servers naive-def service --reverse

For each model, servers run one after another (`--servers` order, or reversed with `--reverse`), each started on
a free 127.0.0.1 port and loaded at every `--concurrency` level and then at the lowest level again (hysteresis);
the ceiling (best `session.run` batch size) is measured before the first server and after each one. The load
generator runs in this process, pinned to its own CPU; the servers are pinned to the others. Results: a table on
stdout, benchmarks/results/peer-<time>.{json,md} and one plot per model in docs/benchmarks/.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import ceiling as ceiling_module
import numpy as np
from inputs import InputSet, input_set
from loadgen import LoadGenerator, LoadResult, build_request, http_get, sched_waits, wait_delta_s

from app.settings import Settings
from model_repository import ModelConfig, latest_version, load_config, version_dir

BUILT_MODELS = REPO / "benchmarks" / "results" / "models"
SERVERS = ("trivial", "naive-def", "naive-async", "service", "service-w2", "service-w2-shared", "service-auto")
NAIVE = ("naive-def", "naive-async")
# The service in one process, with SERVE_WORKERS=2 (whole-service workers on one port), with 2 workers feeding
# one inference process (SERVE_SHARED_INFERENCE), and with SERVE_WORKERS=auto (one per server CPU): the last
# three are not in the default run; name them in --servers to compare, with --server-cpus giving the workers
# more than one CPU.
SERVICES = {"service": {}, "service-w2": {"SERVE_WORKERS": "2"},
            "service-w2-shared": {"SERVE_WORKERS": "2", "SERVE_SHARED_INFERENCE": "true"},
            "service-auto": {"SERVE_WORKERS": "auto"}}
DEFAULT_SERVERS = ("trivial", "naive-def", "naive-async", "service")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
METRIC_LINE = re.compile(r'^(modelserver_\w+)\{model="([^"]*)"\}\s+(\S+)$')
SERVICE_SERIES = {  # per-model (sum, count) series of /metrics -> the name of their mean over a cell
    "batch_size": "mean_batch_size",
    "preprocess_duration_seconds": "preprocess_s_per_batch",
    "inference_duration_seconds": "inference_s_per_batch",
    "queue_wait_seconds": "queue_wait_s_per_request",
}


@dataclass(frozen=True)
class Case:
    """One model with one kind of input."""

    name: str
    model: str  # folder name in the model repository
    built: bool  # built by benchmarks/build_models.py (else bundled in models/)
    inputs: str  # input set (benchmarks/inputs.py)
    count: int  # distinct inputs
    about: str


CASES = {
    case.name: case for case in (
        Case("mnist-cnn", "mnist-cnn", False, "mnist", 512, "bundled CNN (28x28 grey); PNG digits"),
        Case("sst2-textcnn", "sst2-textcnn", False, "sst2", 872, "bundled TextCNN; SST-2 sentences, own lengths"),
        Case("efficientnet-lite0-imagenet", "efficientnet-lite0-imagenet", False, "photos", 96,
             "bundled EfficientNet-Lite0 at 224x224 RGB; JPEG photos of many sizes"),
        Case("resnet18", "resnet18", True, "photos", 96, "ResNet-18 at 224x224 RGB; JPEG photos of many sizes"),
        Case("minilm-128", "minilm-l6", True, "sst2-long", 256,
             "MiniLM-L6, every text truncated to 128 tokens (heavy model, fixed length)"),
        Case("minilm-sst2", "minilm-l6", True, "sst2", 872,
             "MiniLM-L6 on SST-2 sentences at their own lengths (mixed-length real text)"),
    )
}


@dataclass
class Ceiling:
    """One ceiling measurement, and when it was taken."""

    when: str  # "before <server>" / "after <server>"
    best_batch: int
    items_per_s: float
    curve: dict[int, float]
    threads: int
    seconds: float


@dataclass
class Cell:
    """One server at one concurrency level, for one case."""

    case: str
    server: str
    concurrency: int
    step: int  # position in the concurrency sequence (the hysteresis cell is the last)
    again: bool  # the lowest level, run again right after the highest
    window_s: float
    requests_per_s: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    ok: int
    errors: int
    error_detail: dict[str, int]
    sent: int
    mean_batch_size: float | None
    server_cpu_ms_per_request: float | None
    server_cpu_percent: float
    client_cpu_percent: float
    server_wait_percent: float  # time the server's threads waited for a CPU (each other or other processes)
    client_wait_percent: float  # time the load generator waited for a CPU: other processes took it
    others_on_server_cpus_percent: float  # CPU time of other processes (and steal) on the server CPUs
    others_on_client_cpus_percent: float  # ... and on the load generator's CPUs
    peak_rss_mb: float | None
    service: dict[str, float | None] = field(default_factory=dict)
    ceiling_items_per_s: float | None = None
    ratios: dict[str, float | None] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.concurrency} again" if self.again else str(self.concurrency)


# Options ---------------------------------------------------------------------------------------------


def cpu_list(text: str) -> set[int]:
    """`0`, `1-3` or `0,2` as a set of CPU numbers."""
    cpus: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
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
    for item in args.server_env:
        if "=" not in item:
            parser.error(f"--server-env {item!r}: expected NAME=VALUE")
    return args


def pinning(args: argparse.Namespace) -> tuple[set[int], set[int]]:
    """(client CPUs, server CPUs): the first usable CPU for the client, the others for the servers."""
    usable = sorted(os.sched_getaffinity(0))
    client = args.client_cpus or {usable[0]}
    servers = args.server_cpus or (set(usable) - client if len(usable) > 1 else set(usable))
    return client, servers


# Servers ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


class Server:
    """One server subprocess, pinned to the server CPUs."""

    def __init__(self, name: str, case: Case, model_dir: Path, args: argparse.Namespace, cpus: set[int],
                 log: Path) -> None:
        self.name, self.case, self.log = name, case, log
        self.port = free_port()
        python = sys.executable
        bench = Path(__file__).resolve().parent
        self.env = {**os.environ, **service_env(args, model_dir.parent.parent, case.model, self.port),
                    **SERVICES.get(name, {})}
        if name == "trivial":
            self.command = [python, str(bench / "trivial_app.py"), "--port", str(self.port)]
            self.ready_path = "/ping"
        elif name in NAIVE:
            self.command = [python, str(bench / "naive_app.py"), "--model-dir", str(model_dir),
                            "--variant", name.removeprefix("naive-"), "--port", str(self.port)]
            self.ready_path = "/ping"
        else:
            self.command = [python, "-m", "app"]
            self.ready_path = "/health/ready"
        if shutil.which("taskset"):
            self.command = ["taskset", "-c", ",".join(map(str, sorted(cpus))), *self.command]
        self.cpus = cpus
        self.process: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        with self.log.open("wb") as log_file:
            self.process = subprocess.Popen(self.command, cwd=REPO, env=self.env, stdout=log_file,
                                            stderr=subprocess.STDOUT)
        if not shutil.which("taskset"):  # pinned before it starts any thread (taskset pins before exec)
            os.sched_setaffinity(self.process.pid, self.cpus)

    async def start(self, timeout_s: float = 300) -> float:
        """Start and wait until the ready path answers 200; returns the seconds it took."""
        started = time.perf_counter()
        self.spawn()
        assert self.process is not None
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode} before it was ready; "
                                   f"its log:\n{self.log.read_text()[-3000:]}")
            if time.perf_counter() - started > timeout_s:
                raise RuntimeError(f"{self.name} was not ready after {timeout_s:g} s; its log:\n"
                                   f"{self.log.read_text()[-3000:]}")
            try:
                if (await http_get(self.port, self.ready_path, timeout_s=5))[0] == 200:
                    return time.perf_counter() - started
            except (TimeoutError, OSError, asyncio.IncompleteReadError):
                pass
            await asyncio.sleep(0.1)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is not None:
            print(f"  {self.name} had exited with {self.process.returncode}; its log:\n"
                  f"{self.log.read_text()[-3000:]}", file=sys.stderr)
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def service_env(args: argparse.Namespace, models_dir: Path, model: str, port: int) -> dict[str, str]:
    """The service's settings (the naive servers read the ONNX Runtime ones from the same variables)."""
    return {
        "SERVE_MODELS_DIR": str(models_dir), "SERVE_MODELS": model, "SERVE_HOST": "127.0.0.1",
        "SERVE_PORT": str(port), "SERVE_ACCESS_LOG": "false", "SERVE_LOG_LEVEL": "warning",
        "SERVE_GRACEFUL_SHUTDOWN_S": "2",
    } | dict(item.split("=", 1) for item in args.server_env)


def service_settings(args: argparse.Namespace) -> Settings:
    """The service's settings as the servers will read them (for the ceiling's session options)."""
    saved = dict(os.environ)
    os.environ.update(dict(item.split("=", 1) for item in args.server_env))
    try:
        return Settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


async def read_service_metrics(port: int) -> dict[tuple[str, str], float]:
    status, body = await http_get(port, "/metrics")
    if status != 200:
        return {}
    return {(m[1], m[2]): float(m[3]) for line in body.decode().splitlines() if (m := METRIC_LINE.match(line))}


async def read_batch_caps(port: int, model: str) -> dict[str, Any]:
    """The batch caps the service's warm-up search chose for `model`, from `/models`."""
    status, body = await http_get(port, "/models")
    if status != 200:
        return {}
    described = next((item for item in json.loads(body)["models"] if item["name"] == model), {})
    return {key: described.get(key) for key in ("max_batch_size", "max_padded_tokens", "batch_size_curve")}


def service_means(before: dict[tuple[str, str], float], after: dict[tuple[str, str], float],
                  model: str) -> dict[str, float | None]:
    means: dict[str, float | None] = {}
    for series, name in SERVICE_SERIES.items():
        total, count = (after.get((f"modelserver_{series}_{part}", model), 0.0)
                        - before.get((f"modelserver_{series}_{part}", model), 0.0) for part in ("sum", "count"))
        means[name] = total / count if count else None
    return means


# Cells -----------------------------------------------------------------------------------------------


def percentile_ms(latencies: list[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(latencies), q) * 1000) if latencies else None


async def run_cell(server: Server, generator: LoadGenerator, case: Case, concurrency: int, step: int, again: bool,
                   window_s: float, args: argparse.Namespace, collect: dict[int, bytes] | None,
                   cpus: tuple[set[int], set[int]]) -> Cell:
    """One warm-up + measured window, with server CPU, RSS and (service) /metrics over exactly the window."""
    marks: dict[str, Any] = {}

    client_cpus, server_cpus = cpus

    async def window_start() -> None:
        marks["busy0"] = cpu_busy_s(server_cpus), cpu_busy_s(client_cpus)
        marks["cpu0"], marks["wait0"] = tree_cpu_s(server.pid), tree_waits(server.pid)
        if server.name in SERVICES:
            marks["metrics0"] = await read_service_metrics(server.port)

    async def window_end() -> None:
        marks["busy1"] = cpu_busy_s(server_cpus), cpu_busy_s(client_cpus)
        marks["cpu1"], marks["wait1"] = tree_cpu_s(server.pid), tree_waits(server.pid)
        marks["rss"] = tree_peak_rss_mb(server.pid)
        if server.name in SERVICES:
            marks["metrics1"] = await read_service_metrics(server.port)

    result: LoadResult = await generator.run(concurrency, args.warmup, window_s, window_start, window_end,
                                             collect=collect)
    server_cpu = marks["cpu1"] - marks["cpu0"]
    service = service_means(marks["metrics0"], marks["metrics1"], case.model) if server.name in SERVICES else {}
    batch = service.get("mean_batch_size") if server.name in SERVICES else 1.0 if server.name in NAIVE else None
    cell = Cell(
        case=case.name, server=server.name, concurrency=concurrency, step=step, again=again,
        window_s=result.window_s, requests_per_s=result.ok / result.window_s,
        p50_ms=percentile_ms(result.latencies_s, 50), p95_ms=percentile_ms(result.latencies_s, 95),
        p99_ms=percentile_ms(result.latencies_s, 99), ok=result.ok, errors=result.errors,
        error_detail=result.error_detail, sent=result.sent, mean_batch_size=batch,
        server_cpu_ms_per_request=server_cpu * 1000 / result.ok if result.ok else None,
        server_cpu_percent=100 * server_cpu / result.window_s,
        client_cpu_percent=100 * result.client_cpu_s / result.window_s,
        server_wait_percent=100 * wait_delta_s(marks["wait0"], marks["wait1"]) / result.window_s,
        client_wait_percent=100 * result.client_wait_s / result.window_s,
        others_on_server_cpus_percent=max(0.0, 100 * (marks["busy1"][0] - marks["busy0"][0] - server_cpu)
                                          / result.window_s) if server_cpus.isdisjoint(client_cpus) else 0.0,
        others_on_client_cpus_percent=max(0.0, 100 * (marks["busy1"][1] - marks["busy0"][1] - result.client_cpu_s)
                                          / result.window_s) if server_cpus.isdisjoint(client_cpus) else 0.0,
        peak_rss_mb=marks["rss"], service=service,
    )
    print(f"  {case.name:12} {server.name:11} c={cell.label:8} {cell.requests_per_s:9.1f} req/s"
          f"  p50 {fmt(cell.p50_ms)}  p99 {fmt(cell.p99_ms)} ms  errors {cell.errors}"
          f"  batch {fmt(batch, 2)}  server CPU {cell.server_cpu_percent:.0f}%"
          f" ({fmt(cell.server_cpu_ms_per_request, 2)} ms/req, waited {cell.server_wait_percent:.0f}%)"
          f"  client CPU {cell.client_cpu_percent:.0f}% (waited {cell.client_wait_percent:.0f}%)"
          f"  others' CPU on server/client CPUs {cell.others_on_server_cpus_percent:.0f}%"
          f"/{cell.others_on_client_cpus_percent:.0f}%",
          flush=True)
    return cell


def window_seconds(server: str, ceiling: Ceiling, config: ModelConfig, args: argparse.Namespace) -> float:
    """The measured window of a cell: `--duration`, `--trivial-duration` for the trivial server, and for a heavy
    model at least 8 times its slowest batch in the ceiling (up to 2 x `--duration`), so that a window holds
    enough batches for whole-batch bursts of answers not to skew requests/s."""
    if server == "trivial":
        return min(args.duration, args.trivial_duration)
    slowest = max((size / rate for size, rate in ceiling.curve.items() if size <= config.max_batch_size), default=0)
    return min(max(args.duration, 8 * slowest), 2 * args.duration)


def measure_ceiling(when: str, config: ModelConfig, directory: Path, rows: list[Any], cpus: set[int],
                    settings: Settings, args: argparse.Namespace) -> Ceiling:
    threads = len(cpus) if args.ceiling_threads is None else args.ceiling_threads
    limit = min(config.max_batch_size, settings.max_batch_size) if settings.max_batch_size else None
    result = ceiling_module.measure(config, directory, rows, cpus, settings, threads, args.ceiling_seconds, limit)
    print(f"  ceiling {when:17} best batch {result.best_batch:3}: {result.best_items_per_s:9.1f} items/s"
          f"  ({result.seconds:.1f} s)", flush=True)
    return Ceiling(when, result.best_batch, result.best_items_per_s, result.curve, result.threads, result.seconds)


def requests_for(server: str, port: int, case: Case, inputs: InputSet) -> list[bytes]:
    """The prebuilt HTTP requests one server gets: the same bodies for the naive servers and the service."""
    if server == "trivial":
        return [build_request("GET", "/ping", port)]
    path = f"/predict?model={case.model}" if server in SERVICES else "/predict"
    if inputs.is_text:
        return [build_request("POST", path, port, json.dumps({"text": text}).encode(), inputs.content_type)
                for text in inputs.items]
    return [build_request("POST", path, port, data, inputs.content_type) for data in inputs.items]


async def run_case(case: Case, model_dir: Path, inputs: InputSet, args: argparse.Namespace, cpus: set[int],
                   settings: Settings, logs: Path, client_cpus: set[int]) -> dict[str, Any]:
    """Every server at every level for one case, with the ceiling before the first server and after each."""
    config = load_config(model_dir)
    rows = ceiling_module.model_rows(config, model_dir, inputs.items)
    levels = list(args.concurrency) + ([args.concurrency[0]] if len(args.concurrency) > 1 else [])
    print(f"\n{case.name}: {case.about}\n  model {model_dir}; inputs: {inputs.source}", flush=True)
    ceilings = [measure_ceiling(f"before {args.servers[0]}", config, model_dir, rows, cpus, settings, args)]
    cells: list[Cell] = []
    answers: dict[str, dict[int, dict[int, bytes]]] = {}  # server -> step -> input index -> last answer
    startup: dict[str, float] = {}
    affinity: dict[str, list[str]] = {}
    batch_caps: dict[str, Any] = {}  # what the service's warm-up search chose (it varies on a flat curve)
    for name in args.servers:
        server = Server(name, case, model_dir, args, cpus, logs / f"{case.name}-{name}.log")
        try:
            startup[name] = await server.start()
            affinity[name] = sorted(thread_affinities(server.pid))
            if name == "service":
                batch_caps = await read_batch_caps(server.port, config.name)
            answers[name] = {}
            generator = LoadGenerator(server.port, requests_for(name, server.port, case, inputs))
            window = window_seconds(name, ceilings[-1], config, args)
            print(f"  {name} ready in {startup[name]:.1f} s (threads on CPUs {', '.join(affinity[name])})",
                  flush=True)
            for step, concurrency in enumerate(levels):
                collect = answers[name].setdefault(step, {}) if name != "trivial" else None
                cells.append(await run_cell(server, generator, case, concurrency, step,
                                            step == len(levels) - 1 and len(levels) > 1, window, args, collect,
                                            (client_cpus, cpus)))
        finally:
            server.stop()
        ceilings.append(measure_ceiling(f"after {name}", config, model_dir, rows, cpus, settings, args))
    add_ratios(cells, ceilings, args.servers)
    return {
        "case": asdict(case), "model_dir": str(model_dir), "model": config.name, "version": config.version,
        "max_batch_size": config.max_batch_size, "inputs": {"kind": inputs.name, "count": len(inputs.items),
                                                           "source": inputs.source},
        "server_startup_s": startup, "server_thread_cpus": affinity, "service_batch_caps": batch_caps,
        "ceilings": [asdict(c) for c in ceilings], "cells": [asdict(c) for c in cells],
        "correctness": compare_answers(answers, inputs, levels),
    }


def add_ratios(cells: list[Cell], ceilings: list[Ceiling], servers: list[str]) -> None:
    """Each cell's requests/s over the ceiling (mean of the measurements before and after its server) and over
    the other servers' requests/s at the same step."""
    by_step = {(cell.server, cell.step): cell for cell in cells}
    for cell in cells:
        index = servers.index(cell.server)
        cell.ceiling_items_per_s = (ceilings[index].items_per_s + ceilings[index + 1].items_per_s) / 2
        cell.ratios["ceiling"] = cell.requests_per_s / cell.ceiling_items_per_s
        for other in ("naive-def", "naive-async", "trivial", "service"):
            peer = by_step.get((other, cell.step))
            cell.ratios[other] = (cell.requests_per_s / peer.requests_per_s
                                  if peer is not None and peer.requests_per_s and other != cell.server else None)


def compare_answers(answers: dict[str, dict[int, dict[int, bytes]]], inputs: InputSet, levels: list[int],
                    tolerance: float = 1e-5) -> dict[str, Any]:
    """The naive servers' and the service's answers to the same inputs: same labels, scores within `tolerance`.

    The reference is the first of naive-def, naive-async that answered (one `session.run` per input, all cells
    merged). Every other server's answers are compared cell by cell, so the service's answers from batched
    cells (mixed lengths padded together) are checked too. A top label may differ only where the reference's two
    best scores are within `tolerance` of each other (a tie).
    """
    present = [name for name in (*NAIVE, *SERVICES) if any(answers.get(name, {}).values())]
    report: dict[str, Any] = {"reference": present[0] if present else None, "tolerance": tolerance, "pairs": {}}
    if len(present) < 2:
        report["ok"] = None
        return report
    reference: dict[int, Any] = {}
    for step_answers in answers[present[0]].values():
        for index, body in step_answers.items():
            reference.setdefault(index, json.loads(body))
    for name in present[1:]:
        compared, mismatches, max_diff, by_step = 0, [], 0.0, []
        for step, step_answers in sorted(answers[name].items()):
            step_diff, step_compared = 0.0, 0
            for index in sorted(set(step_answers) & set(reference)):
                want, got = reference[index], json.loads(step_answers[index])
                want_scores = {item["label"]: item["score"] for item in want["top_k"]}
                got_scores = {item["label"]: item["score"] for item in got["top_k"]}
                diffs = [abs(score - got_scores[label]) for label, score in want_scores.items() if label in got_scores]
                diff = max(diffs + [abs(want["score"] - got["score"])]) if diffs else math.inf
                tie = len(want["top_k"]) > 1 and want["top_k"][0]["score"] - want["top_k"][1]["score"] <= tolerance
                same_shape = set(want) == set(got) and [item["label"] for item in want["top_k"]] == [
                    item["label"] for item in got["top_k"]] or tie
                if diff > tolerance or not same_shape or (want["label"] != got["label"] and not tie):
                    item = inputs.items[index]
                    mismatches.append({"input": index, "step": step, "reference": want, name: got,
                                       "text": item if isinstance(item, str) else None})
                step_diff, step_compared = max(step_diff, diff), step_compared + 1
            compared += step_compared
            max_diff = max(max_diff, step_diff)
            by_step.append({"step": step, "concurrency": levels[step], "compared": step_compared,
                            "max_score_diff": step_diff})
        report["pairs"][name] = {"compared": compared, "mismatches": len(mismatches), "max_score_diff": max_diff,
                                 "by_cell": by_step, "examples": mismatches[:3]}
    report["ok"] = all(pair["compared"] and not pair["mismatches"] for pair in report["pairs"].values())
    return report


# Report ----------------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def ratio(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 0.1:
        return f"{value:.1%}"
    return f"{value:.0%}" if value < 10 else f"{value:.0f}x"


def git_commit() -> str:
    """The commit of the tree (read-only git commands), marked when tracked files have uncommitted changes."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                            check=False).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True,
                           text=True, check=False).stdout.strip()
    return commit + ("+uncommitted changes" if dirty else "")


def machine_info(load_at_start: tuple[float, ...], client: set[int], servers: set[int], started: str,
                 commit_at_start: str) -> dict[str, Any]:
    import onnxruntime

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    commit_at_end = git_commit()
    return {
        "date": started,
        "cpu_model": model[1].strip() if model else platform.processor(),
        "cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__, "git_commit": commit_at_start,
        "git_commit_at_end": commit_at_end,  # differs when the tree changed during the run
        "load_average_at_start": load_at_start, "load_average_at_end": os.getloadavg(),
        "client_cpus": sorted(client), "server_cpus": sorted(servers),
        "load_generator": "closed-loop asyncio HTTP/1.1 keep-alive client (benchmarks/loadgen.py), in this process",
    }


def markdown(results: dict[str, Any]) -> str:
    info, settings = results["machine"], results["settings"]
    load0, load1 = (", ".join(f"{x:.2f}" for x in info[key]) for key in ("load_average_at_start",
                                                                         "load_average_at_end"))
    end_commit = info.get("git_commit_at_end", info["git_commit"])
    changed = f" (the tree changed during the run: {end_commit} at the end)" if end_commit != info["git_commit"] else ""
    lines = [
        "# Peer benchmark", "",
        (f"{info['date']} · {info['cpu_model']} · {info['cpu_count']} CPUs · onnxruntime {info['onnxruntime']}"
        f" · Python {info['python']} · commit {info['git_commit']}{changed} · load average {load0} at the start,"
        f" {load1} at the end · {results['elapsed_s'] / 60:.1f} min in all"), "",
        (f"Pinning: load generator on CPU {info['client_cpus']}, every server on CPU {info['server_cpus']}"
        f" (the ceiling's session too). Measured windows of {settings['duration']:g} s (trivial server:"
        f" {min(settings['duration'], settings['trivial_duration']):g} s; heavy models: up to"
        f" {2 * settings['duration']:g} s, to hold 8 of their slowest batches) after {settings['warmup']:g} s"
        f" of warm-up; servers in the order {', '.join(settings['servers'])}."
        f" Service settings: {', '.join(settings['server_env']) or 'defaults'}."), "",
        ("req/s: 2xx answers per second in the window. Server CPU: user+system time of the server's process tree"
        " over the window (% of one CPU, and ms per answered request). Client CPU: the load generator's"
        " process. CPU wait: time runnable threads waited for a CPU (/proc schedstat), % of the window; the"
        " client's is time other processes took from it (above a few %, the machine was busy). Others' CPU:"
        " busy time of the server and the client CPUs (/proc/stat, steal included) not spent by the server or the"
        " load generator, % of one CPU: other tenants; above a few %, the cell is suspect. ÷ceiling: req/s over the in-process `session.run` rate at its best batch size (mean of the"
        " measurements before and after that server). ÷naive def / ÷naive async / ÷trivial: req/s over that"
        " server's at the same step. \"1 again\": the first level, run right after the highest."), "",
    ]
    for case in results["cases"]:
        lines += case_markdown(case)
    return "\n".join(lines) + "\n"


def others(cell: dict[str, Any]) -> str:
    """Other processes' CPU time on the server and client CPUs (absent from older results files)."""
    if "others_on_server_cpus_percent" not in cell:
        return "—"
    return f"{cell['others_on_server_cpus_percent']:.0f}% / {cell['others_on_client_cpus_percent']:.0f}%"


def case_markdown(case: dict[str, Any]) -> list[str]:
    lines = [f"## {case['case']['name']}", "",
             (f"{case['case']['about']}. Model `{case['model']}` v{case['version']} (max_batch_size"
             f" {case['max_batch_size']}); inputs: {case['inputs']['source']}."), "",
             ("| server | c | window s | req/s | p50 ms | p95 ms | p99 ms | errors | batch | server CPU | ms CPU/req"
             " | client CPU | CPU wait srv/cli | others' CPU srv/cli | peak RSS MB | ÷ceiling | ÷naive def | ÷naive async | ÷trivial |"),
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in case["cells"]:
        label = f"{c['concurrency']} again" if c["again"] else str(c["concurrency"])
        r = c["ratios"]
        lines.append(
            f"| {c['server']} | {label} | {c['window_s']:.1f} | {c['requests_per_s']:,.1f} | {fmt(c['p50_ms'], 2)} | {fmt(c['p95_ms'], 2)}"
            f" | {fmt(c['p99_ms'], 2)} | {c['errors']} | {fmt(c['mean_batch_size'], 2)}"
            f" | {c['server_cpu_percent']:.0f}% | {fmt(c['server_cpu_ms_per_request'], 2)}"
            f" | {c['client_cpu_percent']:.0f}% | {c['server_wait_percent']:.0f}% / {c['client_wait_percent']:.0f}%"
            f" | {others(c)}"
            f" | {fmt(c['peak_rss_mb'], 0)} | {ratio(r.get('ceiling'))}"
            f" | {ratio(r.get('naive-def'))} | {ratio(r.get('naive-async'))} | {ratio(r.get('trivial'))} |")
    lines += ["", "Ceiling (in-process `session.run`, items/s by batch size):", "",
              "| measured | threads | best batch | items/s | curve |", "|---|---:|---:|---:|---|"]
    for c in case["ceilings"]:
        curve = ", ".join(f"{size}: {rate:,.0f}" for size, rate in c["curve"].items())
        lines.append(f"| {c['when']} | {c['threads']} | {c['best_batch']} | {c['items_per_s']:,.1f} | {curve} |")
    service = [c for c in case["cells"] if c["server"] == "service" and c["service"]]
    if service:
        lines += ["", "Service, from /metrics over each window (means):", "",
                  "| c | batch | preprocess ms/batch | session.run ms/batch | queue wait ms |", "|---|---:|---:|---:|---:|"]
        for c in service:
            s = {key: None if value is None else value * 1000 for key, value in c["service"].items()}
            label = f"{c['concurrency']} again" if c["again"] else str(c["concurrency"])
            lines.append(f"| {label} | {fmt(c['service']['mean_batch_size'], 2)} | {fmt(s['preprocess_s_per_batch'], 2)}"
                         f" | {fmt(s['inference_s_per_batch'], 2)} | {fmt(s['queue_wait_s_per_request'], 2)} |")
    check = case["correctness"]
    if check["pairs"]:
        pairs = "; ".join(f"{name} vs {check['reference']}: {pair['compared']} answers, {pair['mismatches']}"
                          f" mismatches, max score difference {pair['max_score_diff']:.1e}"
                          for name, pair in check["pairs"].items())
        lines += ["", f"Answers ({'OK' if check.get('ok') else 'MISMATCH'}): {pairs}."]
    startup = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in case["server_startup_s"].items())
    lines += ["", f"Start-up to ready: {startup}."]
    caps = case.get("service_batch_caps") or {}
    if caps:
        padded = f", at most {caps['max_padded_tokens']} padded tokens" if caps.get("max_padded_tokens") else ""
        lines += ["", f"The service's batches (chosen at warm-up): at most {caps['max_batch_size']} rows{padded}."]
    lines += [""]
    return lines


def plot(case: dict[str, Any], info: dict[str, Any], directory: Path) -> Path:
    """Throughput (linear, from 0) and p99 latency (log) against concurrency, one line per server, the ceiling
    as a band. The trivial server, when it answers many times faster than the model servers, is left out of the
    throughput panel (its range is given in the legend) so that the model servers can be told apart."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 5.2))
    colours = {"trivial": "tab:gray", "naive-def": "tab:orange", "naive-async": "tab:red", "service": "tab:blue",
               "service-w2": "tab:green", "service-w2-shared": "tab:purple", "service-auto": "tab:cyan"}
    rates = [c["items_per_s"] for c in case["ceilings"]]
    servers = list(dict.fromkeys(c["server"] for c in case["cells"]))
    others = [c["requests_per_s"] for c in case["cells"] if c["server"] != "trivial"] + rates
    trivial = [c["requests_per_s"] for c in case["cells"] if c["server"] == "trivial"]
    trivial_off_scale = bool(trivial) and min(trivial) > 3 * max(others)
    for server in servers:
        cells = [c for c in case["cells"] if c["server"] == server]
        main = [c for c in cells if not c["again"]]
        x = [c["concurrency"] for c in main]
        for axis, key in ((left, "requests_per_s"), (right, "p99_ms")):
            if axis is left and server == "trivial" and trivial_off_scale:
                axis.plot([], [], "o-", color=colours[server],
                          label=f"trivial: {min(trivial):,.0f}-{max(trivial):,.0f} req/s (off scale)")
                continue
            axis.plot(x, [c[key] for c in main], "o-", color=colours[server], label=server)
            for c in cells:
                if c["again"] and c[key] is not None:
                    axis.plot([c["concurrency"]], [c[key]], "D", mfc="none", color=colours[server], ms=9)
    left.axhspan(min(rates), max(rates), color="tab:green", alpha=0.25,
                 label=f"ONNX Runtime ceiling, best batch ({min(rates):,.0f}-{max(rates):,.0f}/s)")
    left.set_ylim(0, 1.15 * max(others + ([] if trivial_off_scale else trivial)))
    right.set_yscale("log")
    levels = sorted({c["concurrency"] for c in case["cells"]})
    for axis, title in ((left, "throughput (req/s)"), (right, "p99 latency (ms, log scale)")):
        axis.set_xscale("log", base=2)
        axis.set_xticks(levels, [str(level) for level in levels])
        axis.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        axis.set_xlabel("concurrent connections (hollow diamond: the first level again, after the highest)",
                        fontsize=8)
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
    handles, labels = left.get_legend_handles_labels()
    figure.legend(handles, labels, fontsize=8, loc="lower center", ncol=len(labels))
    figure.suptitle(f"{case['case']['name']}: {case['case']['about']}\n{info['cpu_model']}, servers on CPU"
                    f" {info['server_cpus']}, load generator on CPU {info['client_cpus']}, {info['date'][:16]} UTC,"
                    f" commit {info['git_commit']}", fontsize=9)
    figure.tight_layout(rect=(0, 0.05, 1, 1))
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{case['case']['name']}.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


# Main ------------------------------------------------------------------------------------------------


def model_directory(case: Case, args: argparse.Namespace) -> Path | None:
    root = args.built_models_dir if case.built else REPO / "models"
    version = latest_version(root / case.model) if (root / case.model).is_dir() else None
    return version_dir(root, case.model, version) if version else None


def missing_models(args: argparse.Namespace) -> list[str]:
    """Each model that a case asked for needs and that is not there, with the command that builds it."""
    how = {True: f"in {args.built_models_dir} (`.venv/bin/python benchmarks/build_models.py` builds it, about "
                 "1.5 min on 2 cores)",
           False: f"in {REPO / 'models'} (`make models` builds it)"}
    cases = [CASES[name] for name in args.models]
    return sorted({f"{case.model} {how[case.built]}" for case in cases if model_directory(case, args) is None})


async def run_all(args: argparse.Namespace) -> dict[str, Any]:
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
