"""`SERVE_WORKERS=auto`: how many worker processes this host gets, and why.

The rule: where the sessions are asked to run on CUDA (`SERVE_PROVIDERS` names it, or `auto` on an ONNX
Runtime build that has it), one worker, since every worker's sessions go to the one GPU that the provider
options name and each would hold a CUDA context of its own there (serve several GPUs with one server per GPU).
Otherwise one worker per CPU the process may use (app.models.runtime.usable_cpus: affinity and cgroup quota), at most
MAX_AUTO_WORKERS: each worker holds its own copy of every model and its own ONNX Runtime arenas, so memory
grows with the count, and past that many processes a host is better served by more pods or servers.
`python -m app` resolves `auto` once (app.topology.topology.choose_topology) and hands the number to the server
processes it starts.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.models.runtime import CUDA, requested_providers, usable_cpus

MAX_AUTO_WORKERS = 8


@dataclass(frozen=True)
class WorkerChoice:
    """The number of worker processes `auto` chose, and the reason, for the start-up log."""

    count: int
    reason: str


def auto_workers(providers: str) -> WorkerChoice:
    """What `SERVE_WORKERS=auto` means on this host, with the `providers` setting given."""
    if CUDA in requested_providers(providers):
        return WorkerChoice(1, f"the sessions ask for {CUDA}: one worker per GPU, and the workers' sessions would "
                               "all share the GPU that the provider options name")
    cpus = usable_cpus()
    count = min(cpus, MAX_AUTO_WORKERS)
    capped = f", capped at {MAX_AUTO_WORKERS} (each worker holds its own copy of the models)" if cpus > count else ""
    return WorkerChoice(count, f"one per usable CPU: {cpus} (affinity and cgroup quota){capped}")
