"""ONNX Runtime sessions: which execution providers to ask for, and how sessions are configured."""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import threading
from pathlib import Path
from typing import Any

try:
    import onnxruntime as ort
except ImportError as missing:  # the serving install names the runtime as an extra
    raise ImportError(
        "ONNX Runtime is not installed: pip install 'onnx-classifier-serving[cpu]' (or '[gpu]' for CUDA)"
    ) from missing

logger = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
_ALIASES = {"cpu": CPU, "cuda": CUDA}
CGROUP_ROOT = Path("/sys/fs/cgroup")

# cuDNN's default exhaustive search costs much more the first time each new input shape runs than its heuristic
# choice, which then runs as fast (docs/benchmarks.md), and dynamic batching makes new shapes all the time.
DEFAULT_PROVIDER_OPTIONS: dict[str, dict[str, Any]] = {CUDA: {"cudnn_conv_algo_search": "HEURISTIC"}}


def cgroup_cpu_quota(root: Path = CGROUP_ROOT) -> float | None:
    """The CPU quota of the cgroup mounted at `root` (a container's own), in CPUs; None when it sets none.

    cgroup v2 says it in `cpu.max` (`<quota> <period>` or `max <period>`); cgroup v1 in `cpu/cpu.cfs_quota_us`
    (-1 for none) over `cpu/cpu.cfs_period_us`.
    """
    try:
        quota, period = (root / "cpu.max").read_text().split()
    except FileNotFoundError:
        try:
            quota = (root / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (root / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except FileNotFoundError:
            return None
    if quota in ("max", "-1"):
        return None
    return int(quota) / int(period)


def usable_cpus() -> int:
    """CPUs this process may run on: its CPU affinity, capped by a cgroup CPU quota (a container's limit),
    rounded up.

    ONNX Runtime's own default counts the machine's cores, so a pinned or CPU-limited server would run more
    compute threads than it has CPUs, and they would wait for each other.
    """
    count = len(os.sched_getaffinity(0))
    quota = cgroup_cpu_quota()
    return count if quota is None else max(1, min(count, math.ceil(quota)))


def cpus_per_worker(workers: int) -> int:
    """This worker process's share of the usable CPUs, when `workers` processes serve side by side."""
    return max(1, usable_cpus() // workers)


_preloading = threading.Lock()
_preloaded = False


def preload_cuda_libraries() -> None:
    """Load CUDA and cuDNN into this process, once, before its first CUDA session.

    The CUDA provider library finds the libraries of NVIDIA's pip wheels (onnxruntime-gpu's `cuda` and `cudnn`
    extras, which the gpu image installs) only once they are loaded: `onnxruntime.preload_dlls()` loads them
    from the wheels, else from the system's library path. What it prints about a library it could not load is
    logged as a warning; the driver's libcuda.so.1 is not among them (ONNX Runtime loads it with the provider).
    """
    global _preloaded
    with _preloading:
        if _preloaded:
            return
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            ort.preload_dlls()
        _preloaded = True
    if printed.getvalue().strip():
        logger.warning("preloading CUDA and cuDNN: %s", " ".join(printed.getvalue().split()))
    logger.info("preloaded CUDA and cuDNN for the CUDA execution provider (onnxruntime.preload_dlls)")


class ProviderUnavailable(RuntimeError):
    """An execution provider named explicitly in the settings cannot run the session."""


def requested_providers(setting: str) -> list[str]:
    """The providers to ask for, most preferred first, from the `providers` setting.

    `auto` asks for CUDA when this ONNX Runtime build has it, then CPU. Whether CUDA really works
    is only known once a session exists: see `session.get_providers()`.
    """
    if setting.strip().lower() == "auto":
        return [CUDA, CPU] if CUDA in ort.get_available_providers() else [CPU]
    names = [_ALIASES.get(part.strip().lower(), part.strip()) for part in setting.split(",") if part.strip()]
    unknown = [name for name in names if name not in ort.get_all_providers()]
    if unknown or not names:
        raise ValueError(f"unknown execution providers {unknown or setting!r}; known: {ort.get_all_providers()}")
    if CPU not in names:
        names.append(CPU)
    return names


def create_session(
    model_path: Path,
    providers: list[str],
    provider_options: dict[str, dict[str, Any]],
    intra_op_threads: int,
    inter_op_threads: int,
    spinning: bool,
    strict: bool,
) -> ort.InferenceSession:
    """An inference session with full graph optimisation, logging which providers it really got.

    With `strict` (a provider named in the settings rather than `auto`), a session that would run on anything
    but the first provider asked for raises `ProviderUnavailable` instead of falling back to the CPU.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = intra_op_threads or usable_cpus()
    options.inter_op_num_threads = inter_op_threads
    # Spinning threads keep their cores busy between runs, taking them from the event loop that feeds them.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "1" if spinning else "0")
    available = set(ort.get_available_providers())
    usable = [name for name in providers if name in available]
    missing = [name for name in providers if name not in available]
    if strict and missing and missing[0] == providers[0]:
        hint = " (CUDA needs onnxruntime-gpu: the `gpu` extra or the gpu image)" if providers[0] == CUDA else ""
        raise ProviderUnavailable(
            f"{providers[0]} was asked for, but this ONNX Runtime build has only {sorted(available)}{hint}"
        )
    if missing:
        logger.warning("%s: providers %s are not in this ONNX Runtime build; using %s", model_path, missing, usable)
    if CUDA in usable:
        preload_cuda_libraries()
    session = ort.InferenceSession(
        str(model_path),
        sess_options=options,
        providers=[(name, {**DEFAULT_PROVIDER_OPTIONS.get(name, {}), **provider_options.get(name, {})})
                   for name in usable],
    )
    got = session.get_providers()
    if usable and got[0] != usable[0]:
        if strict:
            raise ProviderUnavailable(f"{usable[0]} was asked for, but the session could only be created on "
                                      f"{got[0]}: is a GPU visible to this process, with its CUDA and cuDNN?")
        logger.warning("%s: asked for %s but the session runs on %s", model_path, usable[0], got[0])
    return session
