"""The results of a run as Markdown tables (one section per case) and one plot per case, and the machine and
commit it ran on."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

from . import REPO


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
        "load_generator": ("closed-loop asyncio load generator (benchmarks/loadgen.py), in this process: HTTP/1.1"
                           " keep-alive connections, or one grpc.aio channel (benchmarks/peer/protocols.py)"),
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
        f" Service settings: {', '.join(settings['server_env']) or 'defaults'}."
        + (f" The service under test only (not service-baseline): {', '.join(settings['service_env'])}."
           if settings.get("service_env") else "")), "",
        ("req/s: 2xx answers per second in the window. Server CPU: user+system time of the server's process tree"
        " over the window (% of one CPU, and ms per answered request). Client CPU: the load generator's"
        " process. CPU wait: time runnable threads waited for a CPU (/proc schedstat), % of the window; the"
        " client's is time other processes took from it (above a few %, the machine was busy). Others' CPU:"
        " busy time of the server and the client CPUs (/proc/stat, steal included) not spent by the server or the"
        " load generator, % of one CPU: other tenants; above a few %, the cell is suspect. ÷ceiling: req/s over the in-process `session.run` rate at its best batch size (mean of the"
        " measurements before and after that server). ÷naive def / ÷naive async / ÷trivial / ÷service: req/s over that"
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
             " | client CPU | CPU wait srv/cli | others' CPU srv/cli | peak RSS MB | ÷ceiling | ÷naive def | ÷naive async | ÷trivial"
             " | ÷service |"),
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
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
            f" | {ratio(r.get('naive-def'))} | {ratio(r.get('naive-async'))} | {ratio(r.get('trivial'))}"
            f" | {ratio(r.get('service'))} |")
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
               "service-w2": "tab:green", "service-w2-shared": "tab:purple", "service-auto": "tab:cyan",
               "service-v2-json": "tab:olive", "service-v2-binary": "tab:brown", "service-grpc": "tab:pink",
               "service-w4": "darkgreen", "service-w4-shared": "indigo"}
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
