"""Loading a model version, apart from the request work: what a loader produces for the request pipeline.

A loader works in two steps, both blocking (call from a worker thread), each raising what went wrong:
- `open()` makes the executor: for `LocalLoader`, verify the ONNX file against config.json's sha256 and
  create the ONNX Runtime session on the providers the settings ask for;
- `prepare(opened)` checks the graph against config.json, makes the text encoder, warms the model up and tunes
  it: the intra-op thread count and the batch size, each chosen by measurement (app.models.batch_tuning).

The front-end loader of `SERVE_SHARED_INFERENCE` (app.topology.front_end) makes the same two steps from what the inference
process measured.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Protocol

import numpy as np

from app.models import batch_tuning
from app.models.batch_tuning import BatchTiming
from app.models.executors import Executor, LocalExecutor
from app.models.request_pipeline import NUMPY_DTYPES, RequestPipeline, Row, WorkRequest
from app.models.runtime import (
    CPU,
    CUDA,
    cpus_per_worker,
    create_session,
    ort,
    requested_providers,
    usable_cpus,
)
from app.models.text_encoding import TextEncoder
from app.settings import Settings
from model_repository import ModelConfig, ModelRepositoryError, file_sha256
from model_repository.reference import (
    CONFIDENCE_EDGES,
    ReferenceProfile,
    ReferenceProfileError,
    load_reference,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OpenedModel:
    """A model version that can run batches, not yet checked nor tuned."""

    executor: Executor
    provider: str
    intra_op_threads: int


@dataclass(frozen=True)
class PreparedModel:
    """What the request pipeline and the batcher need: the executor kept, the encoder and the batch caps."""

    pipeline: RequestPipeline  # records nothing: the model opens it to traffic with its histograms
    intra_op_threads: int
    batch_curve: list[BatchTiming]
    max_batch_size: int
    max_padded_tokens: int | None  # text: rows x longest tokens per batch, when the batch size was searched
    single_cpu: bool  # runs on the CPU, in a process with one CPU


class ModelLoader(Protocol):
    """Loads one model version in two steps (module docstring)."""

    def open(self) -> OpenedModel: ...

    def prepare(self, opened: OpenedModel) -> PreparedModel: ...


def configured_max_batch_size(config: ModelConfig, settings: Settings) -> int:
    """The most rows a batch may hold before measurement: config.json's, capped by the setting when set."""
    return min(config.max_batch_size, settings.max_batch_size) if settings.max_batch_size else config.max_batch_size


def read_reference(config: ModelConfig, directory: Path) -> tuple[ReferenceProfile | None, str | None]:
    """The version's reference profile and None, or None and why its reference.json cannot be used. A version
    without one, or with a malformed one, serves without a quality baseline (its monitoring, not its answers,
    is what the file is for); the caller says so in the log and /models."""
    try:
        reference = load_reference(directory)
    except ReferenceProfileError as exc:
        return None, str(exc).replace(str(directory), f"{config.name}/{config.version}")
    if reference is None:
        return None, None
    if set(reference.label_counts) != set(config.labels):
        return None, f"{config.name}/{config.version}/reference.json: its labels are not config.json's"
    if tuple(reference.confidence_edges) != CONFIDENCE_EDGES:
        return None, f"{config.name}/{config.version}/reference.json: confidence_edges are not CONFIDENCE_EDGES"
    return reference, None


def threads_per_session(settings: Settings) -> int:
    """The intra-op threads of a model's first session: the setting, else this worker's share of the CPUs."""
    return settings.intra_op_threads or cpus_per_worker(settings.worker_count)


def on_a_single_cpu(provider: str, settings: Settings) -> bool:
    """Whether the model runs on the CPU in a process with one CPU; if so, the tokenizer is told to run on this
    thread, since its thread pool would only take turns with this thread on the one CPU."""
    single_cpu = provider == CPU and cpus_per_worker(settings.worker_count) == 1
    if single_cpu:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return single_cpu


def text_encoder(config: ModelConfig, directory: Path) -> TextEncoder | None:
    """The tokenizer of a text model (None for other models)."""
    spec = config.preprocessing
    if spec.type != "text":
        return None
    return TextEncoder(spec, directory, sorted(item.name for item in config.inputs))


def run_warm_up_batch(pipeline: RequestPipeline, rows: int) -> None:
    """One batch of `rows` inputs: zero tensors, or texts as long as `max_length` allows.

    Texts are timed at full length, so the best size becomes a cap on padded tokens per batch."""
    config = pipeline.config
    if pipeline.encoder is not None:
        words = config.preprocessing.max_length
        request = WorkRequest("text", [" ".join(["the"] * words)] * rows, "predictions")
    else:
        request = WorkRequest("tensor", [_zero_row(config)] * rows, "predictions")
    (outcome,) = pipeline.run_batch([request])
    if isinstance(outcome, Exception):
        raise ModelRepositoryError(f"warm-up inference failed: {outcome}")


def _zero_row(config: ModelConfig) -> Row:
    spec = config.inputs[0]
    return {spec.name: np.zeros([int(dim) for dim in spec.shape[1:]], dtype=NUMPY_DTYPES[spec.dtype])}


class LocalLoader:
    """Loads a model version into an ONNX Runtime session in this process."""

    def __init__(self, config: ModelConfig, directory: Path, settings: Settings,
                 timing_turn: Callable[[], AbstractContextManager[None]]) -> None:
        self.config = config
        self.directory = directory
        self._settings = settings
        self._timing_turn = timing_turn  # held while timing: the only process timing on these CPUs
        self._output_names = [spec.name for spec in config.outputs]

    def open(self) -> OpenedModel:
        self._verify_file()
        threads = threads_per_session(self._settings)
        session = self._create_session(threads)
        return OpenedModel(LocalExecutor(session, self._output_names), session.get_providers()[0], threads)

    def _verify_file(self) -> None:
        """The ONNX file is the one config.json describes (its sha256)."""
        onnx_path = self.directory / self.config.onnx_file
        digest = file_sha256(onnx_path)
        if digest != self.config.sha256:
            raise ModelRepositoryError(
                f"{onnx_path.name} sha256 is {digest}, but config.json says {self.config.sha256}: "
                "the file was changed or corrupted"
            )

    def _create_session(self, intra_op_threads: int) -> ort.InferenceSession:
        settings = self._settings
        return create_session(
            self.directory / self.config.onnx_file,
            requested_providers(settings.providers),
            settings.provider_options,
            intra_op_threads,
            settings.inter_op_threads,
            spinning=settings.intra_op_spinning,
            strict=settings.providers.strip().lower() != "auto",
        )

    def prepare(self, opened: OpenedModel) -> PreparedModel:
        """Check the graph, then run the sizes traffic will use, so the first request does not pay for lazy
        initialisation, then choose the thread count and time batch sizes 1, 2, 4, ... and keep the best
        (`batch_size_search`), or time batch 1 alone.

        On CUDA every batch size is run once, since each new input shape costs a cuDNN algorithm search."""
        assert isinstance(opened.executor, LocalExecutor)
        single_cpu = on_a_single_cpu(opened.provider, self._settings)
        self._check_graph(opened.executor.session)
        pipeline = RequestPipeline(self.config, opened.executor, text_encoder(self.config, self.directory),
                                   self._settings.max_image_pixels)
        configured = configured_max_batch_size(self.config, self._settings)
        sizes = range(1, configured + 1) if opened.provider == CUDA else sorted({1, configured})
        for rows in sizes:
            for _ in range(self._settings.warmup_runs):
                run_warm_up_batch(pipeline, rows)
        search = self._settings.batch_size_search
        with self._timing_turn():
            pipeline, threads = self._keep_the_faster_thread_count(opened, pipeline)
            curve = batch_tuning.measure(partial(run_warm_up_batch, pipeline),
                                         batch_tuning.candidate_sizes(configured) if search else [1])
        prepared = PreparedModel(pipeline, threads, curve, configured, None, single_cpu)
        return self._cap_batches(prepared) if search else prepared

    def _check_graph(self, session: ort.InferenceSession) -> None:
        """The graph takes the inputs config.json names, and has its outputs."""
        graph_inputs = {item.name for item in session.get_inputs()}
        graph_outputs = {item.name for item in session.get_outputs()}
        inputs = sorted(spec.name for spec in self.config.inputs)
        if graph_inputs != set(inputs):
            raise ModelRepositoryError(f"the ONNX graph takes {sorted(graph_inputs)}, config.json says {inputs}")
        if not set(self._output_names) <= graph_outputs:
            raise ModelRepositoryError(f"the ONNX graph outputs {sorted(graph_outputs)}, config.json says "
                                       f"{self._output_names}")

    def _keep_the_faster_thread_count(self, opened: OpenedModel,
                                      pipeline: RequestPipeline) -> tuple[RequestPipeline, int]:
        """Several workers on the CPU, threads not set: time a batch of one on a second session with all the
        CPUs' threads against the first with this worker's share, and keep all of them only if clearly faster
        (batch_tuning.TOLERANCE): under load two workers' threads would share the cores."""
        share, every = opened.intra_op_threads, usable_cpus()
        if opened.provider != CPU or self._settings.intra_op_threads or share >= every:
            return pipeline, share
        every_executor = LocalExecutor(self._create_session(every), self._output_names)
        candidates = {
            share: pipeline,
            every: RequestPipeline(self.config, every_executor, pipeline.encoder, pipeline.max_image_pixels),
        }
        fastest = batch_tuning.fastest_runs({threads: partial(run_warm_up_batch, candidate, 1)
                                             for threads, candidate in candidates.items()})
        threads = every if fastest[every] < batch_tuning.TOLERANCE * fastest[share] else share
        logger.info("model %s: %d intra-op threads by measurement (ms per batch of one: %s)", self.config.name,
                    threads, ", ".join(f"{count} threads {seconds * 1000:.3f}" for count, seconds in fastest.items()))
        return candidates[threads], threads

    def _cap_batches(self, prepared: PreparedModel) -> PreparedModel:
        """Cap batches at the best size measured: rows for tensors; for texts, timed at full length, padded
        tokens, so that shorter texts fit more rows."""
        best_rows = batch_tuning.best_batch_size(prepared.batch_curve)
        curve = ", ".join(f"{t.batch_size}: {t.items_per_s:.0f}" for t in prepared.batch_curve)
        if prepared.pipeline.encoder is None:
            logger.info("model %s: batches capped at %d rows by measurement (items/s by size: %s)",
                        self.config.name, best_rows, curve)
            return replace(prepared, max_batch_size=best_rows)
        max_length = self.config.preprocessing.max_length
        max_padded_tokens = best_rows * max_length
        logger.info("model %s: batches capped at %d padded tokens (%d rows of %d) by measurement, up to %d rows "
                    "(items/s by size: %s)", self.config.name, max_padded_tokens, best_rows, max_length,
                    prepared.max_batch_size, curve)
        return replace(prepared, max_padded_tokens=max_padded_tokens)
