"""The work a batch of requests takes once the batcher formed it: decode images or tokenize texts, collate the
rows with padding, run them through the executor as one batch, and answer each request (softmax and top-k
predictions, or raw output tensors).

`RequestPipeline.run_batch` is the batcher's batch function (app.models.batcher): one outcome per request, in
order, a result or the exception that request answers with. A request that cannot be decoded fails alone, a
model failure on a batch is retried request by request so that only the request that caused it fails, and a
refusal by the executor (a `ServiceError`) answers every request of the batch.

With tracing on (app.observability.tracing), a batch that carries a sampled request runs under a `batch` span
linked to its requests, with a `tokenize` or `decode` span and the executor's span (`session.run`, or `inference
link` to the inference process) under it, each with the model's name and version, the batch's rows and, for
text, its padded length in tokens.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from prometheus_client import Histogram

from app.errors import InferenceFailed, ServiceError
from app.models.executors import Executor, Feeds
from app.models.image_decoding import decode_image
from app.models.text_encoding import TextEncoder
from app.observability import tracing
from app.observability.quality import VersionQuality
from model_repository import ModelConfig
from model_repository.schema import TEXT_INPUT_IDS
from model_repository.scores import class_probabilities

Row = dict[str, np.ndarray]

NUMPY_DTYPES: dict[str, np.dtype[Any]] = {
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "int64": np.dtype(np.int64),
    "int32": np.dtype(np.int32),
    "bool": np.dtype(np.bool_),
}


@dataclass(frozen=True)
class WorkRequest:
    """What one request asks of the batcher: rows to preprocess and the answer it wants."""

    kind: Literal["text", "image", "tensor"]
    inputs: Sequence[Any]  # texts, image bytes, or per-row tensor dicts
    answer: Literal["predictions", "tensors"]
    top_k: int = 1
    output_names: tuple[str, ...] = ()
    trace: tracing.RequestTrace | None = None  # set when tracing samples the request


def collate(rows: Sequence[Row], pad_values: dict[str, int], left: bool = False) -> Feeds:
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


class RequestPipeline:
    """Answers batches of one model version through `executor`.

    `preprocess_seconds` and `inference_seconds` are this model's histograms where this process records them
    (None where another process does, and at warm-up, which is not traffic); `quality` counts the top-1 label
    and confidence of every answered row, /predict and v2 infer alike, where this process records requests."""

    def __init__(self, config: ModelConfig, executor: Executor, encoder: TextEncoder | None, max_image_pixels: int,
                 preprocess_seconds: Histogram | None = None, inference_seconds: Histogram | None = None,
                 quality: VersionQuality | None = None) -> None:
        self.config = config
        self.executor = executor
        self.encoder = encoder
        self.max_image_pixels = max_image_pixels
        self.preprocess_seconds = preprocess_seconds
        self.inference_seconds = inference_seconds
        self.quality = quality
        self._output_names = [spec.name for spec in config.outputs]
        spec = config.preprocessing
        self._pad_values = {TEXT_INPUT_IDS: spec.pad_token_id} if spec.type == "text" else {}
        self._pad_left = spec.type == "text" and spec.padding_side == "left"
        self._model_attributes = {"model.name": config.name, "model.version": config.version}
        self._decodes_images = spec.type == "image"

    def recorded(self, preprocess_seconds: Histogram | None, inference_seconds: Histogram | None,
                 quality: VersionQuality | None) -> RequestPipeline:
        """The same pipeline, observing its batches' preprocessing and run times in these histograms, and its
        answers in `quality`."""
        return RequestPipeline(self.config, self.executor, self.encoder, self.max_image_pixels,
                               preprocess_seconds, inference_seconds, quality)

    def run_batch(self, requests: Sequence[WorkRequest]) -> list[Any]:
        """Preprocess every request, run them as one batch, and split the outputs back per request."""
        if tracing.on():
            traces = [request.trace for request in requests if request.trace is not None]
            if traces:
                attributes = {**self._model_attributes, "batch.requests": len(requests),
                              "batch.rows": sum(len(request.inputs) for request in requests)}
                with tracing.batch_span(traces, attributes):
                    return self._run_batch(requests)
        return self._run_batch(requests)

    def _run_batch(self, requests: Sequence[WorkRequest]) -> list[Any]:
        started = time.perf_counter()
        prepared = self._prepare(requests)
        good = [index for index, rows in enumerate(prepared) if not isinstance(rows, Exception)]
        outcomes: list[Any] = list(prepared)
        if not good:
            return outcomes
        feeds = self._collate([row for index in good for row in prepared[index]])
        ran = time.perf_counter()
        try:
            with tracing.span(self.executor.span_name, self._run_attributes(feeds)):
                outputs = self.executor.run(feeds)
        except ServiceError as exc:  # a refusal of the whole batch (app.models.executors), not a failure
            for index in good:
                outcomes[index] = exc
            return outcomes
        except Exception as exc:  # noqa: BLE001 - any model failure is isolated per request
            if len(good) == 1:
                # Logged with its error id and the request id when answered (app/errors.py).
                outcomes[good[0]] = InferenceFailed(f"model {self.config.name!r} failed on this input", cause=exc)
                return outcomes
            # Isolate the request that broke the batch: every other one still gets its answer.
            for index in good:
                (outcomes[index],) = self.run_batch([requests[index]])
            return outcomes
        finished = time.perf_counter()
        if self.preprocess_seconds is not None:
            self.preprocess_seconds.observe(ran - started)
        if self.inference_seconds is not None:
            self.inference_seconds.observe(finished - ran)
        probabilities = None
        if self.quality is not None or any(requests[index].answer == "predictions" for index in good):
            probabilities = class_probabilities(outputs[0], self.config.output_type)
            if self.quality is not None:
                self.quality.observe(probabilities)
        start = 0
        for index in good:
            end = start + len(prepared[index])
            request = requests[index]
            if request.answer == "tensors":
                outcomes[index] = self._tensors(request, [output[start:end] for output in outputs])
            else:
                outcomes[index] = self._predictions(request, probabilities[start:end])
            start = end
        return outcomes

    def _run_attributes(self, feeds: Feeds) -> dict[str, Any] | None:
        """The model and the batch's shape, for the executor's span, also set on the batch span; None when the
        batch is not traced."""
        batch = tracing.recording_span()
        if batch is None:
            return None
        attributes = {**self._model_attributes, "batch.rows": len(next(iter(feeds.values())))}
        if TEXT_INPUT_IDS in feeds:
            attributes["batch.padded_length"] = feeds[TEXT_INPUT_IDS].shape[-1]
        batch.set_attributes(attributes)
        return attributes

    def _prepare(self, requests: Sequence[WorkRequest]) -> list[list[Row] | Exception]:
        prepared: list[list[Row] | Exception] = []
        texts = [text for request in requests if request.kind == "text" for text in request.inputs]
        if texts and self.encoder is not None:
            with tracing.span("tokenize"):
                encoded = iter(self.encoder.encode(texts))
        else:
            encoded = iter(())
        # One span for the batch's images, not one per request (docs/benchmarks.md, "Tracing").
        with tracing.span("decode") if self._decodes_images else tracing.NOT_TRACED:
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
                rows.append({input_name: decode_image(data, spec, self.max_image_pixels)})
            except ServiceError as exc:
                if len(images) > 1:
                    exc.message = f"image {position}: {exc.message}"
                return exc
        return rows

    def _collate(self, rows: list[Row]) -> Feeds:
        return collate(rows, self._pad_values, left=self._pad_left)

    def _tensors(self, request: WorkRequest, outputs: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        output_names = self._output_names
        wanted = request.output_names or tuple(output_names)
        by_name = dict(zip(output_names, outputs, strict=True))
        return [{name: by_name[name][row] for name in wanted} for row in range(len(outputs[0]))]

    def _predictions(self, request: WorkRequest, scores: np.ndarray) -> list[dict[str, Any]]:
        order = np.argsort(-scores, axis=1, kind="stable")[:, :request.top_k]
        labels = self.config.labels
        predictions = []
        for row_scores, row_order in zip(scores.tolist(), order.tolist(), strict=True):
            top = [{"label": labels[index], "score": row_scores[index]} for index in row_order]
            predictions.append({"label": top[0]["label"], "score": top[0]["score"], "top_k": top})
        return predictions
