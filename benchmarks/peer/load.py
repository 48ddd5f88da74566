"""One model case: every server at every concurrency level, driven by the load generator (`loadgen`), with
the server's CPU, CPU wait, memory and (service) /metrics over exactly each measured window, and the in-process
ceiling measured before the first server and after each one.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import ceiling as ceiling_module
import numpy as np
from inputs import InputSet
from loadgen import LoadGenerator, LoadResult, wait_delta_s

from app.settings import Settings
from model_repository import ModelConfig, load_config

from .answers import compare_answers
from .cases import Case
from .procstat import cpu_busy_s, thread_affinities, tree_cpu_s, tree_peak_rss_mb, tree_waits
from .protocols import client_for, read_answer
from .report import fmt
from .servers import NAIVE, SERVICES, Server, read_batch_caps, read_service_metrics, service_means


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
                batch_caps = await read_batch_caps(server.port, config.name, args.api_key)
            answers[name] = {}
            api_key = args.api_key if name in SERVICES else None
            generator = LoadGenerator(client_for(name, server.port, server.grpc_port, config, inputs, api_key))
            window = window_seconds(name, ceilings[-1], config, args)
            print(f"  {name} ready in {startup[name]:.1f} s (threads on CPUs {', '.join(affinity[name])})",
                  flush=True)
            for step, concurrency in enumerate(levels):
                collect = answers[name].setdefault(step, {}) if name != "trivial" else None
                cells.append(await run_cell(server, generator, case, concurrency, step,
                                            step == len(levels) - 1 and len(levels) > 1, window, args, collect,
                                            (client_cpus, cpus)))
            await generator.client.aclose()
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
        "correctness": compare_answers({name: {step: {index: read_answer(name, body, config)
                                                      for index, body in bodies.items()}
                                               for step, bodies in steps.items()}
                                        for name, steps in answers.items()}, inputs, levels),
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
