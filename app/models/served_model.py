"""One model version being served: its state, and its requests on their way through the batcher.

A `ServedModel` is composed of parts chosen where it is made (app.topology.model_factories):
- a loader (app.models.loading) that makes the executor and tunes the batch caps, here or in the inference
  process;
- an intake (app.models.intake) that says which metrics this process records of its requests, and when a batch
  runs on the event loop;
- at `start()`, the batcher (app.models.batcher), whose batch function is the request pipeline
  (app.models.request_pipeline).

The text batcher counts tokens, as the model does. A token row (v2 tensors, a front-end worker's batch) counts
its tokens exactly; a text counts an estimate, CHARACTERS_PER_TOKEN characters a token up to where the
tokenizer truncates, since counting its tokens exactly would take a tokenizer call on the event loop, before
the batch, for every text, besides the one the pipeline makes on the batcher's thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import numpy as np

from app.errors import InvalidInput, ModelNotReady
from app.models.batch_tuning import BatchTiming
from app.models.batcher import Batcher
from app.models.intake import Intake, inline_rule
from app.models.loading import (
    ModelLoader,
    PreparedModel,
    configured_max_batch_size,
    read_reference,
    threads_per_session,
)
from app.models.request_pipeline import Row, WorkRequest
from app.models.runtime import CPU, ProviderUnavailable
from app.models.text_encoding import TextEncoder
from app.observability import tracing
from app.observability.metrics import Metrics
from app.settings import Settings
from model_repository import ModelConfig, ModelRepositoryError
from model_repository.reference import ReferenceProfile
from model_repository.schema import TEXT_INPUT_IDS

logger = logging.getLogger(__name__)

# On the CPU a text batch costs about what its padded tokens do, so a queued text joins a batch only while the
# batch's padding stays within this fraction of its real length: a mixed queue runs as a few batches of like
# lengths (docs/benchmarks.md). On a GPU padding costs little and each run costs more, so there the batch takes
# what fits.
CPU_MAX_PADDING = 0.25

# English text averages about 4 characters per BPE or WordPiece token.
CHARACTERS_PER_TOKEN = 4


class ModelState(str, Enum):
    LOADING = "loading"
    WARMING = "warming"
    READY = "ready"
    FAILED = "failed"
    DRAINING = "draining"


class ServedModel:
    """Loads, warms up and answers for one model version through its dynamic batcher.

    A little over 150 lines: it is the facade the registry and the data plane use (state, status, the batch
    caps /models reports, predict and infer), and each of those is a few lines over its parts."""

    def __init__(self, config: ModelConfig, directory: Path, loader: ModelLoader, intake: Intake,
                 settings: Settings, metrics: Metrics) -> None:
        self.config = config
        self.directory = directory
        self.name = config.name
        self.state = ModelState.LOADING
        self.error: str | None = None
        self.provider: str | None = None
        self.configured_max_batch_size = configured_max_batch_size(config, settings)
        self.max_batch_size = self.configured_max_batch_size  # until warm-up measures the best size
        self.batch_curve: list[BatchTiming] = []
        self.max_padded_tokens: int | None = None  # text: rows x longest tokens per batch, set by the search
        self.intra_op_threads = 0  # the session's threads per inference, once loading begins
        self.reference: ReferenceProfile | None = None  # reference.json, read where requests are recorded
        self.reference_error: str | None = None  # why a reference.json present is not used
        self._loader = loader
        self._intake = intake
        self._settings = settings
        self._metrics = metrics
        self._output_names = [spec.name for spec in config.outputs]
        self._prepared: PreparedModel | None = None
        self._encoder: TextEncoder | None = None  # a text model's tokenizer, once loaded
        self._batcher: Batcher[WorkRequest, Any] | None = None

    # Loading -----------------------------------------------------------------------------------------

    def load(self) -> None:
        """Open the model, check it and warm it up (app.models.loading). Blocking: call from a worker thread."""
        if self._intake.records_requests:
            self.reference, self.reference_error = read_reference(self.config, self.directory)
            if self.reference_error is not None:
                logger.error("model %s version %s serves without a quality baseline: %s",
                             self.name, self.config.version, self.reference_error)
        try:
            self.intra_op_threads = threads_per_session(self._settings)
            opened = self._loader.open()
            self.provider, self.intra_op_threads = opened.provider, opened.intra_op_threads
            self.state = ModelState.WARMING
            prepared = self._loader.prepare(opened)
        except (ModelRepositoryError, ProviderUnavailable, OSError) as exc:  # say what is wrong, plainly
            self._fail(str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime and tokenizers errors share no base class
            self._fail(f"{type(exc).__name__}: {exc}")
            return
        self._prepared = prepared
        self._encoder = prepared.pipeline.encoder
        self.intra_op_threads = prepared.intra_op_threads
        self.batch_curve = prepared.batch_curve
        self.max_batch_size = prepared.max_batch_size
        self.max_padded_tokens = prepared.max_padded_tokens
        logger.info("model %s version %s ready on %s", self.name, self.config.version, self.provider)

    def _fail(self, reason: str) -> None:
        """Record why loading failed, naming files relative to the repository (answers carry no host paths)."""
        self.state = ModelState.FAILED
        self.error = reason.replace(str(self.directory), f"{self.name}/{self.config.version}")
        logger.error("model %s failed to load: %s", self.name, reason)

    def start(self) -> None:
        """Open the batcher once the model is ready; call from the serving event loop."""
        assert self._prepared is not None, "start() follows a successful load()"
        metrics, name, settings = self._metrics, self.name, self._settings
        executor = self._prepared.pipeline.executor
        records_runs, records_requests = executor.records_session_runs, self._intake.records_requests
        # This model's histograms, looked up once: a lookup by label costs as much as the observation.
        batch_sizes, queue_waits = metrics.batch_size.labels(name), metrics.queue_wait.labels(name)
        quality = None
        if records_requests:
            quality = metrics.quality.version(name, self.config.version, self.config.labels, self.reference,
                                              settings.quality_top_labels, self.low_confidence_threshold)
        pipeline = self._prepared.pipeline.recorded(
            metrics.preprocess_duration.labels(name) if records_requests else None,
            metrics.inference_duration.labels(name) if records_runs else None,
            quality,
        )

        def on_batch(rows: int, waits: list[float]) -> None:
            if records_runs:
                batch_sizes.observe(rows)
            if records_requests:
                for wait in waits:
                    queue_waits.observe(wait)

        self._batcher = Batcher(
            name,
            pipeline.run_batch,
            max_batch_size=self.max_batch_size,
            max_queue_size=settings.max_queue_size,
            max_wait_s=settings.max_batch_wait_ms / 1000,
            on_batch=on_batch,
            on_queue_change=metrics.queue_depth.labels(name).set,
            run_inline=inline_rule(self._intake, executor, settings, self.batch_curve, self._prepared.single_cpu),
            length_of=self._text_tokens if self._encoder is not None else None,
            max_padded_size=self.max_padded_tokens,
            max_padding=self.max_padding,
        )
        self._batcher.start()
        if records_requests:
            metrics.queue_capacity.labels(name).set(settings.max_queue_size)
        metrics.max_batch_size.labels(name).set(self.max_batch_size)
        self.state = ModelState.READY

    def _text_tokens(self, request: WorkRequest) -> float:
        """A text request's longest row, in tokens: counted for token rows, estimated for texts (module
        docstring) up to where the tokenizer truncates, so texts cut to `max_length` tokens keep their order."""
        if request.kind == "tensor":
            return max(row[TEXT_INPUT_IDS].shape[-1] for row in request.inputs)
        return min(max(map(len, request.inputs)) / CHARACTERS_PER_TOKEN, self.config.preprocessing.max_length)

    async def drain(self) -> None:
        if self._batcher is not None:
            self.state = ModelState.DRAINING
            await self._batcher.drain()

    @property
    def max_padding(self) -> float | None:
        """Text models on the CPU: the most padding a batch carries, as a fraction of its texts' real length."""
        return CPU_MAX_PADDING if self._encoder is not None and self.provider == CPU else None

    @property
    def low_confidence_threshold(self) -> float | None:
        """SERVE_LOW_CONFIDENCE_THRESHOLDS' entry for this model, else the reference's 5th percentile."""
        configured = self._settings.low_confidence_thresholds.get(self.name)
        if configured is None and self.reference is not None:
            return self.reference.low_confidence_threshold
        return configured

    @property
    def ready(self) -> bool:
        return self.state is ModelState.READY

    # Answering ---------------------------------------------------------------------------------------

    async def predict(self, kind: Literal["text", "image"], inputs: Sequence[Any], top_k: int,
                      deadline: float, client_gone: Callable[[], bool] | None = None) -> list[dict[str, Any]]:
        """Label, score and top-k for each text or encoded image, in order, by `deadline` (a
        `time.perf_counter()` value); not run if `client_gone()` is true when its batch forms."""
        request = WorkRequest(kind, inputs, "predictions", top_k=min(top_k, len(self.config.labels)),
                              trace=tracing.request_trace())
        return await self._submit(request, deadline, client_gone)

    async def infer(self, rows: list[Row], output_names: tuple[str, ...], deadline: float,
                    client_gone: Callable[[], bool] | None = None) -> list[dict[str, np.ndarray]]:
        """Raw output tensors, one dict per row, for already-preprocessed input rows, by `deadline`; not run
        if `client_gone()` is true when its batch forms."""
        self._check_outputs(output_names)
        if self._encoder is not None:
            vocabulary = self._encoder.tokenizer.get_vocab_size()
            if any(row[TEXT_INPUT_IDS].min() < 0 or row[TEXT_INPUT_IDS].max() >= vocabulary for row in rows):
                raise InvalidInput(f"{TEXT_INPUT_IDS} must lie in [0, {vocabulary}), the tokenizer's vocabulary")
        request = WorkRequest("tensor", rows, "tensors", output_names=output_names, trace=tracing.request_trace())
        return await self._submit(request, deadline, client_gone)

    async def infer_items(self, kind: Literal["text", "image"], items: Sequence[Any], output_names: tuple[str, ...],
                          deadline: float, client_gone: Callable[[], bool] | None = None) -> list[dict[str, np.ndarray]]:
        """Raw output tensors, one dict per item, for texts or encoded images, preprocessed as `predict`'s are."""
        self._check_outputs(output_names)
        if kind != self.config.task:
            raise InvalidInput(f"model {self.name!r} classifies {self.config.task}s, not {kind}s")
        request = WorkRequest(kind, items, "tensors", output_names=output_names, trace=tracing.request_trace())
        return await self._submit(request, deadline, client_gone)

    def _check_outputs(self, output_names: tuple[str, ...]) -> None:
        for name in output_names:
            if name not in self._output_names:
                raise InvalidInput(f"model {self.name!r} has no output {name!r}; it has {self._output_names}")

    async def _submit(self, request: WorkRequest, deadline: float,
                      client_gone: Callable[[], bool] | None) -> list[Any]:
        if self._batcher is None or not self.ready:
            raise ModelNotReady(
                f"model {self.name!r} is not ready ({self.state.value}); see /health, retry when /health/ready is 200"
            )
        size = self.max_batch_size
        if len(request.inputs) <= size:
            return await self._batcher.submit(request, len(request.inputs), deadline, client_gone)
        # More rows than one batch holds: queue every chunk at once, so they run in back-to-back batches.
        chunks = [
            replace(request, inputs=request.inputs[start:start + size])
            for start in range(0, len(request.inputs), size)
        ]
        answers = await asyncio.gather(
            *(self._batcher.submit(chunk, len(chunk.inputs), deadline, client_gone) for chunk in chunks)
        )
        return [result for answer in answers for result in answer]

    # Description -------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.config.version,
            "task": self.config.task,
            "state": self.state.value,
            "provider": self.provider,
            "error": self.error,
        }


# A model version's config and its directory in the repository, to the model that serves it: what each process's
# models are made of (app.topology.model_factories).
ModelFactory = Callable[[ModelConfig, Path], ServedModel]
