"""Where a model's batches run: the one narrow interface between the request pipeline and a session.

An executor takes a collated batch (input name to tensor) and returns the model's outputs in the order of the
model config's outputs. A `ServiceError` it raises is a refusal that answers every request of the batch as it
is; any other exception is a model failure, which the pipeline isolates to the request that caused it.

Each executor also says what its runs are for this process:
- `records_session_runs`: its runs are session runs this process records (batch sizes, inference time);
- `may_run_inline`: a batch may run on the event loop, because it computes here rather than waiting on
  another process;
- `span_name`: the name of its runs' spans when tracing is on (app.observability.tracing).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from app.models.runtime import ort

Feeds = dict[str, np.ndarray]


class Executor(Protocol):
    """Runs collated batches of one model version."""

    records_session_runs: bool
    may_run_inline: bool
    span_name: str

    def run(self, feeds: Feeds) -> list[np.ndarray]:
        """The model's outputs for the batch, one array per output of the model config, in its order."""
        ...


class LocalExecutor:
    """An ONNX Runtime session in this process."""

    records_session_runs = True
    may_run_inline = True
    span_name = "session.run"

    def __init__(self, session: ort.InferenceSession, output_names: list[str]) -> None:
        self.session = session
        self._output_names = output_names

    def run(self, feeds: Feeds) -> list[np.ndarray]:
        return self.session.run(self._output_names, feeds)
