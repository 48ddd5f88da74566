"""One model version being served: its ONNX Runtime session, preprocessing, batcher and state."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import numpy as np

from app.errors import InferenceFailed, InvalidInput, ModelNotReady, ServiceError
from app.models import batch_tuning
from app.models.batcher import Batcher
from app.models.image_decoding import decode_image
from app.models.runtime import (
    CPU,
    CUDA,
    ProviderUnavailable,
    cpus_per_worker,
    create_session,
    ort,
    requested_providers,
    usable_cpus,
)
from app.models.text_encoding import TextEncoder
from app.observability.metrics import Metrics
from app.settings import Settings
from app.topology.workers import one_worker_at_a_time
from model_repository import ModelConfig, ModelRepositoryError, file_sha256
from model_repository.schema import TEXT_INPUT_IDS

logger = logging.getLogger(__name__)

Row = dict[str, np.ndarray]

# A lone request (nothing else in flight) runs on the event loop when the model answers a batch of one this
# fast: two thread hand-offs cost 0.2-0.3 ms, as much as a small model's whole inference, while blocking the
# loop this long is harmless.
INLINE_MAX_SECONDS = 0.002
# ... but not while requests wait unread this long (Linux counts it in 4 ms steps): "nothing else in flight"
# then only means the loop reads one request at a time, and running batches on it would keep it that way.
BEHIND_SECONDS = 0.008
# With a single CPU, a worker thread adds no parallelism: it only takes turns with the event loop at the GIL.
# Every batch measured at warm-up to take at most this long then runs on the loop; longer ones keep the
# thread, so the loop still answers health probes while a heavy model computes.
SINGLE_CPU_INLINE_MAX_SECONDS = 0.02
# On the CPU a text batch costs about what its padded tokens do, so a queued text joins a batch only while the
# batch's padding stays within this fraction of its real length: a mixed queue runs as a few batches of like
# lengths. In-process on SST-2 sentences (queues of 4 to 64 texts drawn at random, one thread), against one
# batch of the whole queue: TextCNN +22% to +80% texts/s, MiniLM-L6 +44% (8 texts) and +76% (32). On a GPU
# padding costs little and each run costs more, so there the batch takes what fits.
CPU_MAX_PADDING = 0.25

NUMPY_DTYPES: dict[str, np.dtype[Any]] = {
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "int64": np.dtype(np.int64),
    "int32": np.dtype(np.int32),
    "bool": np.dtype(np.bool_),
}


class ModelState(str, Enum):
    LOADING = "loading"
    WARMING = "warming"
    READY = "ready"
    FAILED = "failed"
    DRAINING = "draining"


@dataclass(frozen=True)
class WorkRequest:
    """What one HTTP request asks of the batcher: rows to preprocess and the answer it wants."""

    kind: Literal["text", "image", "tensor"]
    inputs: Sequence[Any]  # texts, image bytes, or per-row tensor dicts
    answer: Literal["predictions", "tensors"]
    top_k: int = 1
    output_names: tuple[str, ...] = ()


def collate(rows: Sequence[Row], pad_values: dict[str, int], left: bool = False) -> dict[str, np.ndarray]:
    """Stack rows into batch tensors, padding sequences to the longest row in this batch."""
    if len(rows) == 1:
        return {name: array[None] for name, array in rows[0].items()}
    feeds = {}
    for name in rows[0]:
        arrays = [row[name] for row in rows]
        if all(array.shape == arrays[0].shape for array in arrays):
            feeds[name] = np.stack(arrays)
            continue
        longest = max(array.shape[-1] for array in arrays)
        batch = np.full((len(arrays), longest), pad_values.get(name, 0), dtype=arrays[0].dtype)
        for position, array in enumerate(arrays):
            if left:
                batch[position, longest - array.shape[-1]:] = array
            else:
                batch[position, :array.shape[-1]] = array
        feeds[name] = batch
    return feeds


# English text averages about 4 characters per BPE or WordPiece token.
CHARACTERS_PER_TOKEN = 4


class ServedModel:
    """Loads, warms up and answers for one model version through its dynamic batcher."""

    # What this process records of the model: with SERVE_SHARED_INFERENCE the front-end workers record their
    # requests (queue waits, queue capacity, preprocessing) and the inference process its batches (batch sizes,
    # session.run times).
    records_session_runs = True
    records_requests = True

    def __init__(self, config: ModelConfig, directory: Path, settings: Settings, metrics: Metrics) -> None:
        self.config = config
        self.directory = directory
        self.name = config.name
        self.state = ModelState.LOADING
        self.error: str | None = None
        self.provider: str | None = None
        self.configured_max_batch_size = (
            min(config.max_batch_size, settings.max_batch_size) if settings.max_batch_size else config.max_batch_size
        )
        self.max_batch_size = self.configured_max_batch_size  # until warm-up measures the best size
        self.batch_curve: list[batch_tuning.BatchTiming] = []
        self.max_padded_tokens: int | None = None  # text: rows x longest tokens per batch, set by the search
        self.intra_op_threads = 0  # the session's threads per inference, once it exists
        self._settings = settings
        self._metrics = metrics
        self._session: ort.InferenceSession | None = None
        self._encoder: TextEncoder | None = None
        self._output_names = [spec.name for spec in config.outputs]
        self._input_specs = {spec.name: spec for spec in config.inputs}
        self._pad_values = {name: 0 for name in self._input_specs}
        if config.preprocessing.type == "text":
            self._pad_values[TEXT_INPUT_IDS] = config.preprocessing.pad_token_id
        self._batcher: Batcher[WorkRequest, Any] | None = None
        self._single_cpu = False  # set once the session exists: runs on the CPU, in a process with one CPU
        # This model's histograms, looked up once: a lookup by label costs as much as the observation.
        self._preprocess_seconds = metrics.preprocess_duration.labels(self.name)
        self._inference_seconds = metrics.inference_duration.labels(self.name)

    # Loading -----------------------------------------------------------------------------------------

    def load(self) -> None:
        """Verify the file, create the session and warm it up. Blocking: call from a worker thread."""
        try:
            self._load_session()
            self.state = ModelState.WARMING
            self._warm_up()
        except (ModelRepositoryError, ProviderUnavailable, OSError) as exc:  # say what is wrong, plainly
            self._fail(str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime and tokenizers errors share no base class
            self._fail(f"{type(exc).__name__}: {exc}")
            return
        logger.info("model %s version %s ready on %s", self.name, self.config.version, self.provider)

    def _fail(self, reason: str) -> None:
        """Record why loading failed, naming files relative to the repository (answers carry no host paths)."""
        self.state = ModelState.FAILED
        self.error = reason.replace(str(self.directory), f"{self.name}/{self.config.version}")
        logger.error("model %s failed to load: %s", self.name, reason)

    def _verify_file(self) -> None:
        """The ONNX file is the one config.json describes (its sha256)."""
        onnx_path = self.directory / self.config.onnx_file
        digest = file_sha256(onnx_path)
        if digest != self.config.sha256:
            raise ModelRepositoryError(
                f"{onnx_path.name} sha256 is {digest}, but config.json says {self.config.sha256}: "
                "the file was changed or corrupted"
            )

    def _load_session(self) -> None:
        self._verify_file()
        settings = self._settings
        cpus = cpus_per_worker(settings.workers)
        self.intra_op_threads = settings.intra_op_threads or cpus
        self._session = self._create_session(self.intra_op_threads)
        self.provider = self._session.get_providers()[0]
        self._single_cpu = self.provider == CPU and cpus == 1
        if self._single_cpu:
            # The tokenizer's thread pool would only take turns with this thread on the one CPU.
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        graph_inputs = {item.name for item in self._session.get_inputs()}
        graph_outputs = {item.name for item in self._session.get_outputs()}
        if graph_inputs != set(self._input_specs):
            raise ModelRepositoryError(f"the ONNX graph takes {sorted(graph_inputs)}, config.json says "
                                       f"{sorted(self._input_specs)}")
        if not set(self._output_names) <= graph_outputs:
            raise ModelRepositoryError(f"the ONNX graph outputs {sorted(graph_outputs)}, config.json says "
                                       f"{self._output_names}")
        if self.config.preprocessing.type == "text":
            self._encoder = TextEncoder(self.config.preprocessing, self.directory, sorted(graph_inputs))

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

    def _keep_the_faster_thread_count(self) -> None:
        """Several workers on the CPU, threads not set: time a batch of one with this worker's share of the
        CPUs' threads and with all of them, and keep all of them only if clearly faster (5%).

        Under load the two run within a few percent of each other, but one request at a time each model has
        its preference: on 2 cores `mnist-cnn` runs a batch of one in 0.48 ms with 2 threads and 0.61 ms with
        1, `sst2-textcnn` in 0.33 ms with 1 and 0.46 ms with 2 (docs/benchmarks.md)."""
        share, every = self.intra_op_threads, usable_cpus()
        if self.provider != CPU or self._settings.intra_op_threads or share >= every:
            return
        sessions = {share: self._session, every: self._create_session(every)}

        def batch_of_one_on(session: ort.InferenceSession) -> Callable[[], None]:
            def run() -> None:
                self._session = session
                self._run_warm_up_batch(1)
            return run

        fastest = batch_tuning.fastest_runs({threads: batch_of_one_on(session)
                                             for threads, session in sessions.items()})
        # All the threads only when clearly faster: under load two workers' threads would share the cores.
        self.intra_op_threads = every if fastest[every] < batch_tuning.TOLERANCE * fastest[share] else share
        self._session = sessions[self.intra_op_threads]
        logger.info("model %s: %d intra-op threads by measurement (ms per batch of one: %s)", self.name,
                    self.intra_op_threads, ", ".join(f"{threads} threads {seconds * 1000:.3f}"
                                                     for threads, seconds in fastest.items()))

    def _warm_up(self) -> None:
        """Run the sizes traffic will use, so the first request does not pay for lazy initialisation, then
        time batch sizes 1, 2, 4, ... and keep the best (`batch_size_search`), or time batch 1 alone.

        On CUDA every batch size is run once, since each new input shape costs a cuDNN algorithm search.
        """
        configured = self.configured_max_batch_size
        sizes = range(1, configured + 1) if self.provider == CUDA else sorted({1, configured})
        for rows in sizes:
            for _ in range(self._settings.warmup_runs):
                self._run_warm_up_batch(rows)
        search = self._settings.batch_size_search
        with one_worker_at_a_time("warm-up-timing"):
            self._keep_the_faster_thread_count()
            self.batch_curve = batch_tuning.measure(
                self._run_warm_up_batch, batch_tuning.candidate_sizes(configured) if search else [1]
            )
        if not search:
            return
        best_rows = batch_tuning.best_batch_size(self.batch_curve)
        curve = ", ".join(f"{t.batch_size}: {t.items_per_s:.0f}" for t in self.batch_curve)
        if self._encoder is None:
            self.max_batch_size = best_rows
            logger.info("model %s: batches capped at %d rows by measurement (items/s by size: %s)",
                        self.name, best_rows, curve)
            return
        # Timed at full length, the best size caps the padded batch, not the rows: shorter texts fit more rows.
        self.max_padded_tokens = best_rows * self.config.preprocessing.max_length
        logger.info("model %s: batches capped at %d padded tokens (%d rows of %d) by measurement, up to %d rows "
                    "(items/s by size: %s)", self.name, self.max_padded_tokens, best_rows,
                    self.config.preprocessing.max_length, self.max_batch_size, curve)

    def _run_warm_up_batch(self, rows: int) -> None:
        """One batch of `rows` inputs: zero tensors, or texts as long as `max_length` allows.

        Texts are timed at full length, and the best size becomes a cap on padded tokens per batch: MiniLM-L6
        on one CPU keeps its items/s up to 8 rows of 128 tokens, 16 of 64 and 32 of 16 (about 1,000 tokens
        each; measured in-process, docs/benchmarks.md)."""
        if self._encoder is not None:
            words = self.config.preprocessing.max_length
            request = WorkRequest("text", [" ".join(["the"] * words)] * rows, "predictions")
        else:
            request = WorkRequest("tensor", [self._zero_row()] * rows, "predictions")
        (outcome,) = self._run_batch([request], record=False)
        if isinstance(outcome, Exception):
            raise ModelRepositoryError(f"warm-up inference failed: {outcome}")

    def _zero_row(self) -> Row:
        spec = self.config.inputs[0]
        return {spec.name: np.zeros([int(dim) for dim in spec.shape[1:]], dtype=NUMPY_DTYPES[spec.dtype])}

    def start(self) -> None:
        """Open the batcher once the model is ready; call from the serving event loop."""
        metrics, name = self._metrics, self.name
        batch_sizes, queue_waits = metrics.batch_size.labels(name), metrics.queue_wait.labels(name)

        def on_batch(rows: int, waits: list[float]) -> None:
            if self.records_session_runs:
                batch_sizes.observe(rows)
            if self.records_requests:
                for wait in waits:
                    queue_waits.observe(wait)

        self._batcher = Batcher(
            name,
            self._run_batch,
            max_batch_size=self.max_batch_size,
            max_queue_size=self._settings.max_queue_size,
            max_wait_s=self._settings.max_batch_wait_ms / 1000,
            on_batch=on_batch,
            on_queue_change=metrics.queue_depth.labels(name).set,
            run_inline=self._batch_runs_inline,
            length_of=self._text_length if self._encoder is not None else None,
            max_padded_size=self.max_padded_tokens * CHARACTERS_PER_TOKEN if self.max_padded_tokens else None,
            max_padding=self.max_padding,
        )
        self._batcher.start()
        if self.records_requests:
            metrics.queue_capacity.labels(name).set(self._settings.max_queue_size)
        metrics.max_batch_size.labels(name).set(self.max_batch_size)
        self.state = ModelState.READY

    def _text_length(self, request: WorkRequest) -> int:
        """A text request's length for length bucketing, in characters (a proxy for tokens) up to where the
        tokenizer truncates: texts cut to `max_length` tokens are all equally long, so they keep their order.
        Token rows (v2 tensors, a front-end worker's batch) count `CHARACTERS_PER_TOKEN` per token."""
        if request.kind == "tensor":
            return max(row[TEXT_INPUT_IDS].shape[-1] for row in request.inputs) * CHARACTERS_PER_TOKEN
        return min(max(map(len, request.inputs)), self.config.preprocessing.max_length * CHARACTERS_PER_TOKEN)

    def _batch_runs_inline(self, rows: int) -> bool:
        """Whether a batch of `rows` runs on the event loop rather than the worker thread: any short batch
        when the process has a single CPU (SINGLE_CPU_INLINE_MAX_SECONDS), else only a lone fast request
        (INLINE_MAX_SECONDS) while the server reads requests as they come (BEHIND_SECONDS)."""
        if self._settings.max_batch_wait_ms > 0 or not self.batch_curve:  # a batching window was asked for
            return False
        if self._single_cpu:
            return self._expected_seconds(rows) <= SINGLE_CPU_INLINE_MAX_SECONDS
        alone = self._metrics.requests_in_flight <= 1 and self._metrics.read_delay_s < BEHIND_SECONDS
        return alone and self.batch_curve[0].seconds_per_batch <= INLINE_MAX_SECONDS

    def _expected_seconds(self, rows: int) -> float:
        """A batch's time at warm-up: that of the smallest measured size that holds `rows`, else the largest."""
        timing = next((t for t in self.batch_curve if t.batch_size >= rows), self.batch_curve[-1])
        return timing.seconds_per_batch * max(1.0, rows / timing.batch_size)

    async def drain(self) -> None:
        if self._batcher is not None:
            self.state = ModelState.DRAINING
            await self._batcher.drain()

    @property
    def max_padding(self) -> float | None:
        """Text models on the CPU: the most padding a batch carries, as a fraction of its texts' real length."""
        return CPU_MAX_PADDING if self._encoder is not None and self.provider == CPU else None

    @property
    def ready(self) -> bool:
        return self.state is ModelState.READY

    # Answering ---------------------------------------------------------------------------------------

    async def predict(self, kind: Literal["text", "image"], inputs: Sequence[Any], top_k: int,
                      deadline: float, client_gone: Callable[[], bool] | None = None) -> list[dict[str, Any]]:
        """Label, score and top-k for each text or encoded image, in order, by `deadline` (a
        `time.perf_counter()` value); not run if `client_gone()` is true when its batch forms."""
        request = WorkRequest(kind, inputs, "predictions", top_k=min(top_k, len(self.config.labels)))
        return await self._submit(request, deadline, client_gone)

    async def infer(self, rows: list[Row], output_names: tuple[str, ...], deadline: float,
                    client_gone: Callable[[], bool] | None = None) -> list[dict[str, np.ndarray]]:
        """Raw output tensors, one dict per row, for already-preprocessed input rows, by `deadline`; not run
        if `client_gone()` is true when its batch forms."""
        for name in output_names:
            if name not in self._output_names:
                raise InvalidInput(f"model {self.name!r} has no output {name!r}; it has {self._output_names}")
        if self._encoder is not None:
            vocabulary = self._encoder.tokenizer.get_vocab_size()
            if any(row[TEXT_INPUT_IDS].min() < 0 or row[TEXT_INPUT_IDS].max() >= vocabulary for row in rows):
                raise InvalidInput(f"{TEXT_INPUT_IDS} must lie in [0, {vocabulary}), the tokenizer's vocabulary")
        request = WorkRequest("tensor", rows, "tensors", output_names=output_names)
        return await self._submit(request, deadline, client_gone)

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

    # The batch function, run on the batcher's worker thread ------------------------------------------

    def _run_batch(self, requests: Sequence[WorkRequest], record: bool = True) -> list[Any]:
        """Preprocess every request, run them as one batch, and split the outputs back per request."""
        started = time.perf_counter()
        prepared = self._prepare(requests)
        good = [index for index, rows in enumerate(prepared) if not isinstance(rows, Exception)]
        outcomes: list[Any] = list(prepared)
        if good:
            feeds = self._collate([row for index in good for row in prepared[index]])
            ran = time.perf_counter()
            try:
                outputs = self._session.run(self._output_names, feeds)
            except ServiceError as exc:  # a refusal by the inference process (SERVE_SHARED_INFERENCE), not a failure
                for index in good:
                    outcomes[index] = exc
                return outcomes
            except Exception as exc:  # noqa: BLE001 - any ONNX Runtime failure is isolated per request
                if len(good) == 1:
                    # Logged with its error id and the request id when answered (app/errors.py).
                    outcomes[good[0]] = InferenceFailed(f"model {self.name!r} failed on this input", cause=exc)
                    return outcomes
                # Isolate the request that broke the batch: every other one still gets its answer.
                for index in good:
                    (outcomes[index],) = self._run_batch([requests[index]], record=record)
                return outcomes
            finished = time.perf_counter()
            if record:
                if self.records_requests:
                    self._preprocess_seconds.observe(ran - started)
                if self.records_session_runs:
                    self._inference_seconds.observe(finished - ran)
            start = 0
            for index in good:
                end = start + len(prepared[index])
                outcomes[index] = self._answer(requests[index], [output[start:end] for output in outputs])
                start = end
        return outcomes

    def _prepare(self, requests: Sequence[WorkRequest]) -> list[list[Row] | Exception]:
        prepared: list[list[Row] | Exception] = []
        texts = [text for request in requests if request.kind == "text" for text in request.inputs]
        encoded = iter(self._encoder.encode(texts)) if texts and self._encoder is not None else iter(())
        for request in requests:
            if request.kind == "text":
                prepared.append([next(encoded) for _ in request.inputs])
            elif request.kind == "image":
                prepared.append(self._decode_images(request.inputs))
            else:
                prepared.append(list(request.inputs))
        return prepared

    def _decode_images(self, images: Sequence[bytes]) -> list[Row] | Exception:
        spec = self.config.preprocessing
        input_name = self.config.inputs[0].name
        rows = []
        for position, data in enumerate(images):
            try:
                rows.append({input_name: decode_image(data, spec, self._settings.max_image_pixels)})
            except ServiceError as exc:
                if len(images) > 1:
                    exc.message = f"image {position}: {exc.message}"
                return exc
        return rows

    def _collate(self, rows: list[Row]) -> dict[str, np.ndarray]:
        spec = self.config.preprocessing
        return collate(rows, self._pad_values, left=spec.type == "text" and spec.padding_side == "left")

    def _answer(self, request: WorkRequest, outputs: list[np.ndarray]) -> list[Any]:
        if request.answer == "tensors":
            wanted = request.output_names or tuple(self._output_names)
            by_name = dict(zip(self._output_names, outputs, strict=True))
            return [{name: by_name[name][row] for name in wanted} for row in range(len(outputs[0]))]
        scores = outputs[0].astype(np.float32, copy=False)
        if self.config.output_type == "logits":
            scores = np.exp(scores - scores.max(axis=1, keepdims=True))
            scores /= scores.sum(axis=1, keepdims=True)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :request.top_k]
        labels = self.config.labels
        predictions = []
        for row_scores, row_order in zip(scores.tolist(), order.tolist(), strict=True):
            top = [{"label": labels[index], "score": row_scores[index]} for index in row_order]
            predictions.append({"label": top[0]["label"], "score": top[0]["score"], "top_k": top})
        return predictions

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
