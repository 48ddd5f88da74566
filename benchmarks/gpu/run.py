#!/usr/bin/env python3
"""The GPU benchmark in one command, on a GPU machine with no internet: install, check, measure, one folder.

    python3 benchmarks/gpu/run.py --bundle DIR --results DIR [--models minilm-sst2] [--work /tmp/gpu-bench]
    python3 benchmarks/gpu/run.py --dry-run --results DIR     # here, on the CPU: the same steps, seconds long

With a bundle (`benchmarks/gpu/bundle.py`'s pieces in DIR), it checks the pieces against SHA256SUMS, joins and
unpacks them into --work, and installs the wheels there with this Python's pip (`--target`, no index), once:
a second run on the same machine reuses them. It then checks that ONNX Runtime makes a CUDA session on the
ResNet-18 model (the service's own preload first), and runs `benchmarks/peer.py` on the models with the naive
server (`def`), the service with 1 and 4 workers and 4 workers feeding one inference process, all with
`SERVE_PROVIDERS=cuda`, while a thread samples `nvidia-smi` (utilisation and memory of the GPU, memory of each
process) every half second. Everything lands in --results: peer.py's JSON and Markdown, peer.log,
environment.txt, gpu-samples.csv, gpu-processes.csv and summary.md (per model and server: peak GPU memory,
mean and peak utilisation). Runs with the same --results add to it.

`--dry-run` uses this checkout's environment and the CPU (`SERVE_PROVIDERS=cpu`), the bundled models,
built-in sentences and peer.py's `--quick` windows, and samples nothing when there is no `nvidia-smi`.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GPU_MODELS = ("minilm-sst2", "resnet18")
DRY_MODELS = ("mnist-cnn", "sst2-textcnn")
SERVERS = ("naive-def", "service", "service-w4", "service-w4-shared")
GPU_QUERY = "timestamp,utilization.gpu,memory.used,memory.total,power.draw"
PROCESS_QUERY = "pid,used_memory"
SAMPLE_S = 0.5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--bundle", type=Path, help="folder of bundle.py's pieces and SHA256SUMS")
    parser.add_argument("--dry-run", action="store_true", help="on the CPU, in this checkout's environment")
    parser.add_argument("--results", type=Path, required=True, help="results folder (created, or added to)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/gpu-bench"), help="where the bundle is installed")
    parser.add_argument("--models", nargs="+", help=f"peer.py cases (default {' '.join(GPU_MODELS)}; "
                        f"dry run {' '.join(DRY_MODELS)})")
    parser.add_argument("--servers", nargs="+", default=list(SERVERS), help="peer.py servers")
    parser.add_argument("--concurrency", nargs="+", default=["1", "8", "32", "128"], help="peer.py levels")
    parser.add_argument("--duration", default="5", help="peer.py seconds per cell")
    parser.add_argument("--warmup", default="2", help="peer.py warm-up seconds per cell")
    parser.add_argument("--server-env", action="append", default=[], metavar="SERVE_X=VALUE",
                        help="another setting for the servers (repeatable; SERVE_PROVIDERS is set by the mode)")
    args = parser.parse_args(argv)
    if args.dry_run == (args.bundle is not None):
        parser.error("give --bundle DIR (on the GPU machine) or --dry-run (here), not both")
    args.models = args.models or list(DRY_MODELS if args.dry_run else GPU_MODELS)
    return args


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(2**20):
            digest.update(chunk)
    return digest.hexdigest()


def unpack(bundle: Path, work: Path) -> Path:
    """Check the pieces against SHA256SUMS, join them and unpack the tar into `work/bundle` (once per bundle:
    the whole tar's checksum is kept in `work/bundle/.sha256`); returns that folder."""
    sums = dict(reversed(line.split(maxsplit=1)) for line in (bundle / "SHA256SUMS").read_text().splitlines())
    expected_whole = sums.pop("bundle.tar")
    target = work / "bundle"
    if (target / ".sha256").is_file() and (target / ".sha256").read_text() == expected_whole:
        return target
    for name, digest in sorted(sums.items()):
        piece = bundle / name
        if not piece.is_file():
            raise SystemExit(f"run.py: piece {name} is missing from {bundle}")
        if sha256(piece) != digest:
            raise SystemExit(f"run.py: piece {name} does not match SHA256SUMS: copy it again")
    work.mkdir(parents=True, exist_ok=True)
    joined, whole = work / "bundle.tar", hashlib.sha256()
    with joined.open("wb") as out:
        for name in sorted(sums):
            data = (bundle / name).read_bytes()
            whole.update(data)
            out.write(data)
    if whole.hexdigest() != expected_whole:
        raise SystemExit("run.py: the joined pieces do not match SHA256SUMS's bundle.tar")
    shutil.rmtree(target, ignore_errors=True)
    with tarfile.open(joined) as tar:
        tar.extractall(target, filter="data")
    joined.unlink()
    (target / ".sha256").write_text(expected_whole)
    return target


def install(unpacked: Path, work: Path) -> Path:
    """pip install the bundle's wheels into `work/site` (no index, no dependency resolution: the bundle holds
    them, or this Python has them), once; returns that folder, to go first on PYTHONPATH."""
    site = work / "site"
    stamp = site / ".installed"
    wheels = sorted((unpacked / "wheels").glob("*.whl"))
    listing = "\n".join(wheel.name for wheel in wheels)
    if stamp.is_file() and stamp.read_text() == listing:
        return site
    shutil.rmtree(site, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-compile",
                    "--target", str(site), *map(str, wheels)], check=True)
    stamp.write_text(listing)
    return site


def gpu_environment(site: Path) -> dict[str, str]:
    """PYTHONPATH with the installed wheels first, and LD_LIBRARY_PATH with the lib folders of every `nvidia`
    package this Python can see (the bundle's, else e.g. PyTorch's), so the CUDA provider finds CUDA and cuDNN."""
    paths = [str(site), *(p for p in sys.path if p.endswith("-packages"))]
    libs = sorted({str(lib) for root in paths for lib in Path(root).glob("nvidia/*/lib")})
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)]),
            "LD_LIBRARY_PATH": os.pathsep.join([*libs, os.environ.get("LD_LIBRARY_PATH", "")]).rstrip(os.pathsep)}


# Run with the benchmark's environment: what ONNX Runtime this is, and a strict CUDA session on one model.
PREFLIGHT = """
import sys, onnxruntime
from pathlib import Path
from app.models.runtime import create_session, requested_providers
print("onnxruntime", onnxruntime.__version__, "from", onnxruntime.__file__)
print("available providers:", onnxruntime.get_available_providers())
session = create_session(Path(sys.argv[1]), requested_providers(sys.argv[2]), {}, 0, 1, spinning=False, strict=True)
print("session providers on", sys.argv[1], ":", session.get_providers())
"""


def preflight(env: dict[str, str], model: Path, providers: str, out: Path) -> None:
    """Write the machine, its GPU and ONNX Runtime to `out`; stop here if a session cannot run on `providers`."""
    lines = [f"date: {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}", f"python: {sys.version}"]
    if shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
        lines.append("gpu: " + subprocess.run(query, capture_output=True, text=True, check=False).stdout.strip())
    else:
        lines.append("gpu: no nvidia-smi")
    check = subprocess.run([sys.executable, "-c", PREFLIGHT, str(model), providers], env=env, cwd=REPO,
                           capture_output=True, text=True, check=False)
    lines += [check.stdout.strip(), check.stderr.strip()[-4000:]]
    out.write_text("\n".join(lines) + "\n")
    if check.returncode != 0:
        raise SystemExit(f"run.py: no {providers} session (see {out}):\n{check.stderr[-2000:]}")


class Sampler(threading.Thread):
    """Samples nvidia-smi every SAMPLE_S seconds into two CSV files, each row tagged with the phase (model and
    server) that peer.py is in; does nothing where there is no nvidia-smi."""

    def __init__(self, results: Path) -> None:
        super().__init__(daemon=True)
        self.gpu_file, self.process_file = results / "gpu-samples.csv", results / "gpu-processes.csv"
        self.phase = "start"
        self.stopped = threading.Event()
        self.available = shutil.which("nvidia-smi") is not None

    def query(self, kind: str, fields: str) -> list[list[str]]:
        answer = subprocess.run(["nvidia-smi", f"--query-{kind}={fields}", "--format=csv,noheader,nounits"],
                                capture_output=True, text=True, check=False)
        return [[cell.strip() for cell in line.split(",")] for line in answer.stdout.splitlines() if line.strip()]

    def run(self) -> None:
        if not self.available:
            return
        for path, header in ((self.gpu_file, ["phase", *GPU_QUERY.split(",")]),
                             (self.process_file, ["phase", "time", *PROCESS_QUERY.split(",")])):
            if not path.is_file():
                path.write_text(",".join(header) + "\n")
        with self.gpu_file.open("a", newline="") as gpu, self.process_file.open("a", newline="") as processes:
            while not self.stopped.wait(SAMPLE_S):
                now = dt.datetime.now().isoformat(timespec="milliseconds")
                csv.writer(gpu).writerows([self.phase, *row] for row in self.query("gpu", GPU_QUERY))
                csv.writer(processes).writerows([self.phase, now, *row]
                                                for row in self.query("compute-apps", PROCESS_QUERY))
                gpu.flush()
                processes.flush()


def run_peer(args: argparse.Namespace, env: dict[str, str], models_dir: Path, providers: str,
             sampler: Sampler) -> int:
    """peer.py, its output shown and kept in peer.log; each server's start names the sampler's phase."""
    command = [sys.executable, "-u", str(REPO / "benchmarks" / "peer.py"), "--models", *args.models,
               "--servers", *args.servers, "--concurrency", *args.concurrency, "--built-models-dir", str(models_dir),
               "--results-dir", str(args.results), "--no-plots", "--server-env", f"SERVE_PROVIDERS={providers}",
               *(option for setting in args.server_env for option in ("--server-env", setting))]
    command += ["--quick", "--builtin-sentences"] if args.dry_run else ["--duration", args.duration,
                                                                        "--warmup", args.warmup]
    case_line = re.compile(rf"^({'|'.join(map(re.escape, args.models))}): ")
    server_line = re.compile(r"^  (\S+) ready in ")
    case = "?"
    with (args.results / "peer.log").open("a") as log:
        process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True)
        assert process.stdout is not None
        for line in process.stdout:
            sys.stdout.write(line)
            log.write(line)
            if match := case_line.match(line):
                case = match[1]
            elif match := server_line.match(line):
                sampler.phase = f"{case} {match[1]}"
        return process.wait()


def summary(results: Path) -> str:
    """Per phase (model and server): samples, peak GPU memory and utilisation, peak memory of all processes."""
    gpu_file, process_file = results / "gpu-samples.csv", results / "gpu-processes.csv"
    if not gpu_file.is_file():
        return "# GPU benchmark\n\nNo nvidia-smi on this machine: the GPU was not sampled.\n"
    by_phase: dict[str, list[dict[str, str]]] = defaultdict(list)
    with gpu_file.open() as source:
        for row in csv.DictReader(source):
            by_phase[row["phase"]].append(row)
    processes: dict[tuple[str, str], float] = defaultdict(float)  # (phase, time) -> MiB of all processes
    counts: dict[tuple[str, str], int] = defaultdict(int)
    with process_file.open() as source:
        for row in csv.DictReader(source):
            processes[row["phase"], row["time"]] += float(row["used_memory"])
            counts[row["phase"], row["time"]] += 1
    lines = ["# GPU benchmark: nvidia-smi per phase", "",
             ("Each phase runs from a server's start (its warm-up included) to the next's; peer.py's tables are "
              "in peer-*.md."), "",
             ("| phase (model server) | samples | GPU util mean % | GPU util max % | GPU memory max MiB "
              "| processes max | their memory max MiB |"), "| --- | --- | --- | --- | --- | --- | --- |"]
    for phase, rows in by_phase.items():
        util = [float(row["utilization.gpu"]) for row in rows if row["utilization.gpu"].replace(".", "").isdigit()]
        memory = [float(row["memory.used"]) for row in rows if row["memory.used"].replace(".", "").isdigit()]
        mine = [value for (name, _), value in processes.items() if name == phase]
        most = max((count for (name, _), count in counts.items() if name == phase), default=0)
        lines.append(f"| {phase} | {len(rows)} | {sum(util) / max(len(util), 1):.0f} | {max(util, default=0):.0f} "
                     f"| {max(memory, default=0):.0f} | {most} | {max(mine, default=0):.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.results.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    if args.dry_run:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        models_dir, providers = REPO / "models", "cpu"
        check_model = REPO / "models" / "mnist-cnn" / "1" / "model.onnx"
    else:
        unpacked = unpack(args.bundle, args.work)
        env = gpu_environment(install(unpacked, args.work))
        models_dir, providers = unpacked / "models", "cuda"
        check_model = next((models_dir / "resnet18").glob("*/*.onnx"))
    print(f"installed in {time.monotonic() - started:.0f} s", flush=True)
    preflight(env, check_model, providers, args.results / "environment.txt")
    sampler = Sampler(args.results)
    sampler.start()
    try:
        status = run_peer(args, env, models_dir, providers, sampler)
    finally:
        sampler.stopped.set()
        sampler.join()
    (args.results / "summary.md").write_text(summary(args.results))
    print(f"peer.py exited {status}; results in {args.results} ({(time.monotonic() - started) / 60:.1f} min)")
    return status


if __name__ == "__main__":
    sys.exit(main())
