"""The in-process ONNX Runtime ceiling: `session.run` in a loop at batch sizes 1, 2, 4, ... max, best kept.

The batches are made of the very rows the service makes from the benchmark's inputs (its own `decode_image`
and `TextEncoder`), taken in the order the load generator sends them; text batches are padded to their longest
row, as the service pads them. Only `session.run` is timed: no decoding, tokenizing or copying. The session is
created with the service's own `create_session`, on the CPUs the servers get (the calling thread is pinned
there while the session exists, so ONNX Runtime's pool threads start there too).
"""

from __future__ import annotations

import inspect
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from app.models.batch_tuning import candidate_sizes
from app.models.image_decoding import decode_image
from app.models.request_pipeline import Row, collate
from app.models.runtime import create_session, requested_providers
from app.models.text_encoding import TextEncoder
from app.settings import Settings
from model_repository import ModelConfig


@dataclass
class CeilingResult:
    """Items/s of each batch size tried, and the best."""

    best_batch: int
    best_items_per_s: float
    curve: dict[int, float] = field(default_factory=dict)  # batch size -> items/s
    threads: int = 0
    seconds: float = 0.0  # wall time the measurement took


def service_session(onnx_path: Path, settings: Settings, intra_op_threads: int | None = None) -> object:
    """A session configured as the service configures its own (`app.models.runtime.create_session` with the
    ONNX Runtime settings of `settings`, its providers included), optionally with another intra-op thread count."""
    values = {
        "model_path": onnx_path, "providers": requested_providers(settings.providers),
        "provider_options": settings.provider_options,
        "intra_op_threads": settings.intra_op_threads if intra_op_threads is None else intra_op_threads,
        "inter_op_threads": settings.inter_op_threads, "strict": settings.providers.strip().lower() != "auto",
        "spinning": getattr(settings, "intra_op_spinning", True),
    }
    wanted = inspect.signature(create_session).parameters
    missing = [name for name in wanted if name not in values and wanted[name].default is inspect.Parameter.empty]
    if missing:
        raise RuntimeError(f"app.models.runtime.create_session takes {missing}, which benchmarks/ceiling.py does not know")
    return create_session(**{name: value for name, value in values.items() if name in wanted})


def model_rows(config: ModelConfig, directory: Path, items: list[bytes] | list[str]) -> list[Row]:
    """One preprocessed row per input, exactly as the service makes it."""
    if config.preprocessing.type == "text":
        encoder = TextEncoder(config.preprocessing, directory, [spec.name for spec in config.inputs])
        return encoder.encode(list(items))
    name = config.inputs[0].name
    return [{name: decode_image(data, config.preprocessing, 10**9)} for data in items]


def measure(config: ModelConfig, directory: Path, rows: list[Row], cpus: set[int], settings: Settings,
            threads: int | None, seconds_per_size: float, max_batch_size: int | None = None) -> CeilingResult:
    """Time each batch size for about `seconds_per_size` (at least 2 runs after 1 untimed), best kept.

    Sizes past the peak are skipped once two in a row fall under 80% of the best so far, or once one batch
    takes longer than 4 x `seconds_per_size` (a heavy model: larger batches only take longer).
    """
    started = time.perf_counter()
    own = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)  # this thread, and the pool threads the session starts
    try:
        session = service_session(directory / config.onnx_file, settings, threads)
        outputs = [spec.name for spec in config.outputs]
        pad = {"input_ids": getattr(config.preprocessing, "pad_token_id", 0)}
        left = getattr(config.preprocessing, "padding_side", "right") == "left"
        curve: dict[int, float] = {}
        below = 0
        for size in candidate_sizes(max_batch_size or config.max_batch_size):
            batches = [collate([rows[(start + i) % len(rows)] for i in range(size)], pad, left)
                       for start in range(0, max(len(rows), size), size)][:64]
            session.run(outputs, batches[0])  # untimed: first run of this shape
            items, runs, begin = 0, 0, time.perf_counter()
            while runs < 2 or time.perf_counter() - begin < seconds_per_size:
                session.run(outputs, batches[runs % len(batches)])
                items += size
                runs += 1
            elapsed = time.perf_counter() - begin
            curve[size] = items / elapsed
            best = max(curve.values())
            below = below + 1 if curve[size] < 0.8 * best else 0
            if below >= 2 or elapsed / runs > 4 * seconds_per_size:
                break
        del session
    finally:
        os.sched_setaffinity(0, own)
    best_batch = max(curve, key=curve.__getitem__)
    threads = settings.intra_op_threads if threads is None else threads
    return CeilingResult(best_batch, curve[best_batch], curve, threads, time.perf_counter() - started)
