"""CPU latency of an ONNX Runtime session, for the size/speed report of reduced-precision models."""

from __future__ import annotations

import time

import numpy as np
import onnxruntime as ort

from training.export import InputBatch, run_session

LATENCY_BATCH_SIZES = (1, 8)


def tile_rows(batch: InputBatch, rows: int) -> InputBatch:
    """`rows` rows taken from `batch` in turn (repeated when it has fewer)."""
    return {name: np.resize(array, (rows, *array.shape[1:])) for name, array in batch.items()}


def median_latency_ms(session: ort.InferenceSession, batch: InputBatch, runs: int = 15) -> float:
    """Median wall time of one `session.run` on `batch` in milliseconds, after two warm-up runs."""
    for _ in range(2):
        run_session(session, batch)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        run_session(session, batch)
        times.append(time.perf_counter() - started)
    return round(1000 * float(np.median(times)), 2)


def latency_table(session: ort.InferenceSession, batch: InputBatch) -> dict[str, float]:
    """Median milliseconds per run at each of LATENCY_BATCH_SIZES, keyed by batch size."""
    return {str(size): median_latency_ms(session, tile_rows(batch, size)) for size in LATENCY_BATCH_SIZES}
