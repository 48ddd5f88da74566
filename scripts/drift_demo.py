#!/usr/bin/env python3
"""Model-quality drift on real data through a real Prometheus (docs/monitoring.md, "Model quality").

Serves sst2-textcnn (`python -m app`, loopback), runs Debian's `prometheus` in the foreground on 127.0.0.1
with the compose scrape config and monitoring/prometheus/alerts.yml, and sends three streams, one after the
other, at a steady rate:

1. SST-2 dev sentences (the model's held-out set, which its reference.json was made from): drift under "watch";
2. AG News headlines (news, not reviews): another domain;
3. negative SST-2 training sentences only (the traffic turned negative): drift over "act", the alert fires.

The rules are the repository's with the 30-minute windows and 10-minute `for:` shortened (`--window`, `--for`),
so that the demo takes minutes; the record names keep their `30m`. It prints the drift, low-confidence ratio
and alert state at the end of each stream and plots the scraped series with matplotlib:

    python scripts/drift_demo.py --data-dir ../shared/data --plot docs/images/drift-demo.png
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = REPO_ROOT / "monitoring" / "prometheus"
MODEL = "sst2-textcnn"
JOB = "onnx-classifier-serving"
DRIFT = "job_model_version:modelserver_prediction_drift:js_distance30m"
LOW_RATIO = "job_model_version:modelserver_low_confidence:ratio30m"
SHIFT = "job_model_version:modelserver_prediction_confidence:ks_distance30m"
ALERT = "ModelServerPredictionDrift"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def streams(data_dir: Path) -> list[tuple[str, list[str]]]:
    """The three streams of the module docstring, each shuffled with a fixed seed."""
    dev = [line.split("\t")[0] for line in (data_dir / "sst2" / "dev.tsv").read_text().splitlines()[1:]]
    with open(data_dir / "ag_news" / "test.csv", newline="", encoding="utf-8") as file:
        headlines = [row[1] for row in csv.reader(file)]
    negatives = [line.split("\t")[0] for line in (data_dir / "sst2" / "train.tsv").read_text().splitlines()[1:]
                 if line.endswith("\t0") and len(line.split()) >= 8]
    chosen = []
    for name, texts in (("SST-2 dev sentences", dev), ("AG News headlines", headlines),
                        ("negative SST-2 reviews only", negatives)):
        texts = list(texts)
        random.Random(22).shuffle(texts)
        chosen.append((name, texts))
    return chosen


def demo_rules(window_s: int, for_s: int) -> dict[str, Any]:
    """alerts.yml with the quality rules' 30-minute windows and the quality alerts' `for:` shortened."""
    text = (PROMETHEUS_DIR / "alerts.yml").read_text().replace("[30m]", f"[{window_s}s]")
    rules = yaml.safe_load(text)
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") in (ALERT, "ModelServerLowConfidence"):
                rule["for"] = f"{for_s}s"
    return rules


def write_prometheus_config(directory: Path, server_port: int, window_s: int, for_s: int) -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    [job] = [job for job in config["scrape_configs"] if job["job_name"] == JOB]
    for key in [key for key in job if key.endswith("_sd_configs")]:
        del job[key]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{server_port}"]}]
    config["scrape_configs"] = [job]
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    (directory / "alerts.yml").write_text(yaml.safe_dump(demo_rules(window_s, for_s), sort_keys=False))


@contextmanager
def running(command: list[str], log: Path, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "ab") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until(url: str, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    sys.exit(f"{what} did not answer {url} within {timeout:.0f} s")


def send(client: httpx.Client, texts: list[str], seconds: float, rate: float, batch: int) -> int:
    """Send `texts` in lists of `batch`, `rate` requests a second, for `seconds`; the number of texts answered.
    A 503 (the machine too busy: `overloaded`) is skipped, as a client that retries later would."""
    sent, requests, position, started = 0, 0, 0, time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        chunk = [texts[(position + offset) % len(texts)] for offset in range(batch)]
        position += batch
        requests += 1
        answer = client.post("/predict", json={"text": chunk, "model": MODEL})
        if answer.status_code != 503:
            answer.raise_for_status()
            sent += batch
        pause = requests / rate - elapsed
        if pause > 0:
            time.sleep(pause)
    return sent


def instant(client: httpx.Client, promql: str) -> float | None:
    result = client.get("/api/v1/query", params={"query": promql}).json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def series(client: httpx.Client, promql: str, start: float, end: float) -> list[tuple[float, float]]:
    response = client.get("/api/v1/query_range", params={"query": promql, "start": start, "end": end, "step": 1})
    result = response.json()["data"]["result"]
    return [(float(t), float(v)) for t, v in result[0]["values"]] if result else []


def plot(path: Path, data: dict[str, list[tuple[float, float]]], phases: list[tuple[str, float, float]],
         thresholds: dict[str, float], start: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True, height_ratios=[3, 2])
    colours = ["#e8f1fa", "#fdf2e0", "#fbe6e6"]
    for axis in (top, bottom):
        for (name, begin, end), colour in zip(phases, colours, strict=True):
            axis.axvspan(begin - start, end - start, color=colour)
    for name, begin, _ in phases:
        top.text(begin - start + 3, 0.95, name, va="top", fontsize=9)
    for label, key, style in (("label drift (JS distance)", "drift", "-"), ("confidence shift (KS)", "shift", ":")):
        points = data[key]
        top.plot([t - start for t, _ in points], [v for _, v in points], style, color="#1f4e79", label=label)
    top.axhline(thresholds["watch"], color="orange", linestyle="--", label=f"watch {thresholds['watch']}")
    top.axhline(thresholds["act"], color="red", linestyle="--", label=f"act {thresholds['act']}")
    firing = [t - start for t, v in data["alert"] if v == 1]
    if firing:
        top.axvspan(min(firing), max(firing), ymin=0, ymax=0.04, color="red", label=f"{ALERT} firing")
    top.set_ylim(0, 1)
    top.set_ylabel("distance from the reference")
    top.legend(loc="center left", fontsize=8)
    top.set_title(f"{MODEL}: drift from its reference (SST-2 dev), scraped from Prometheus every second")
    points = data["low"]
    bottom.plot([t - start for t, _ in points], [v for _, v in points], color="#7a3b00", label="low-confidence ratio")
    bottom.axhline(thresholds["low"], color="red", linestyle="--", label=f"ModelServerLowConfidence {thresholds['low']}")
    bottom.set_ylim(0, max(0.3, max((v for _, v in points), default=0) * 1.1))
    bottom.set_ylabel("share of answers")
    bottom.set_xlabel("seconds")
    bottom.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--window", type=int, default=60, help="the rules' window in seconds (30m in production)")
    parser.add_argument("--for", dest="for_s", type=int, default=20, help="the alerts' for: in seconds (10m)")
    parser.add_argument("--phase-seconds", type=float, default=100.0, help="how long each stream runs")
    parser.add_argument("--rate", type=float, default=10.0, help="requests per second")
    parser.add_argument("--batch", type=int, default=4, help="texts per request")
    parser.add_argument("--plot", type=Path, help="write the plot here (PNG)")
    parser.add_argument("--json", type=Path, help="write the figures and series here")
    args = parser.parse_args()

    chosen = streams(args.data_dir)
    server_port, prometheus_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="drift-demo-") as scratch:
        directory = Path(scratch)
        write_prometheus_config(directory, server_port, args.window, args.for_s)
        env = {key: value for key, value in os.environ.items() if not key.startswith("SERVE_")}
        env.update(SERVE_MODELS=MODEL, SERVE_PORT=str(server_port), SERVE_HOST="127.0.0.1",
                   SERVE_MODELS_DIR=str(REPO_ROOT / "models"),
                   PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])))
        prometheus = ["prometheus", f"--config.file={directory / 'prometheus.yml'}",
                      f"--storage.tsdb.path={directory / 'data'}",
                      f"--web.listen-address=127.0.0.1:{prometheus_port}", "--log.level=warn"]
        with running([sys.executable, "-m", "app"], directory / "server.log", env, cwd=directory), \
                running(prometheus, directory / "prometheus.log", cwd=directory):
            wait_until(f"http://127.0.0.1:{server_port}/health/ready", "the server")
            wait_until(f"http://127.0.0.1:{prometheus_port}/-/ready", "Prometheus")
            prom = httpx.Client(base_url=f"http://127.0.0.1:{prometheus_port}", timeout=10)
            thresholds = {"watch": instant(prom, "modelserver:prediction_drift:watch"),
                          "act": instant(prom, "modelserver:prediction_drift:act"),
                          "low": instant(prom, "modelserver:low_confidence_ratio:act")}
            selector = f'{{job="{JOB}", model="{MODEL}"}}'
            alert = f'max(ALERTS{{alertname="{ALERT}", alertstate="firing", model="{MODEL}"}}) or vector(0)'
            phases, figures = [], []
            start = time.time()
            with httpx.Client(base_url=f"http://127.0.0.1:{server_port}", timeout=30) as client:
                for name, texts in chosen:
                    begin = time.time()
                    sent = send(client, texts, args.phase_seconds, args.rate, args.batch)
                    time.sleep(2)  # the last scrape and rule evaluation
                    end = time.time()
                    phases.append((name, begin, end))
                    figures.append({"stream": name, "texts": sent,
                                    "drift": instant(prom, f"{DRIFT}{selector}"),
                                    "confidence_shift": instant(prom, f"{SHIFT}{selector}"),
                                    "low_confidence_ratio": instant(prom, f"{LOW_RATIO}{selector}"),
                                    "alert_firing": instant(prom, alert) == 1})
                    print(json.dumps(figures[-1]), flush=True)
            finish = time.time()
            data = {"drift": series(prom, f"{DRIFT}{selector}", start, finish),
                    "shift": series(prom, f"{SHIFT}{selector}", start, finish),
                    "low": series(prom, f"{LOW_RATIO}{selector}", start, finish),
                    "alert": series(prom, alert, start, finish)}
    if args.plot:
        plot(args.plot, data, phases, thresholds, start)
    if args.json:
        args.json.write_text(json.dumps({"figures": figures, "thresholds": thresholds, "window_s": args.window,
                                         "phases": [[n, b - start, e - start] for n, b, e in phases],
                                         "series": {k: [[t - start, v] for t, v in v_] for k, v_ in data.items()}}))


if __name__ == "__main__":
    main()
