"""A model seen from a front-end worker of `SERVE_SHARED_INFERENCE`: the worker reads, decodes, tokenizes and
batches its own requests, and each batch runs in the inference process (app.topology.inference_process),
merged there with the batches of the other workers.

`RemoteExecutor` is the executor (app.models.executors) that sends a batch over the link and returns its
outputs; `InferenceProcessLoader` is the loader (app.models.loading) that loads nothing itself: it waits until
the inference process has the model version ready, batches as that process measured, and sends warm-up batches
of one through the link and back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from app.models.executors import Feeds
from app.models.loading import OpenedModel, PreparedModel, on_a_single_cpu, run_warm_up_batch, text_encoder
from app.models.request_pipeline import RequestPipeline
from app.observability import tracing
from app.settings import Settings
from app.topology.inference_link import InferenceClient, wait_until_ready
from model_repository import ModelConfig, ModelRepositoryError


class RemoteExecutor:
    """A model version's session in the inference process, which records its runs; a batch waits on the link,
    so it never runs on the event loop."""

    records_session_runs = False
    may_run_inline = False
    span_name = "inference link"

    def __init__(self, client: InferenceClient, config: ModelConfig, description: dict[str, Any]) -> None:
        self._client = client
        self._config = config
        self._output_names = [spec.name for spec in config.outputs]
        self.description = description  # what the inference process measured (its `describe` answer)

    def run(self, feeds: Feeds) -> list[np.ndarray]:
        """The batch's outputs, computed in the inference process. Its refusals, and a link that is down
        (`InferenceUnreachable`), raise `ServiceError`s; its model failures `RemoteInferenceFailed`. A traced
        batch sends its span's context along, for the inference process's batch to link."""
        return self._client.call(("run", self._config.name, self._config.version, self._output_names, feeds,
                                  tracing.link_carrier()))


class InferenceProcessLoader:
    """Loads a model version that the inference process serves, over `client`."""

    def __init__(self, config: ModelConfig, directory: Path, settings: Settings, client: InferenceClient) -> None:
        self.config = config
        self.directory = directory
        self._settings = settings
        self._client = client

    def open(self) -> OpenedModel:
        """Wait until the inference process has the version ready (or failed: then raise why)."""
        description = wait_until_ready(self._client, self.config.name, self.config.version)
        if description["state"] != "ready":
            raise ModelRepositoryError(f"the inference process cannot serve it: {description['error']}")
        executor = RemoteExecutor(self._client, self.config, description)
        return OpenedModel(executor, description["provider"], description["intra_op_threads"])

    def prepare(self, opened: OpenedModel) -> PreparedModel:
        """Batch as the inference process measured, and send a batch of one through the link and back."""
        assert isinstance(opened.executor, RemoteExecutor)
        described = opened.executor.description
        single_cpu = on_a_single_cpu(opened.provider, self._settings)
        pipeline = RequestPipeline(self.config, opened.executor, text_encoder(self.config, self.directory),
                                   self._settings.max_image_pixels)
        for _ in range(max(1, self._settings.warmup_runs)):
            run_warm_up_batch(pipeline, 1)
        return PreparedModel(pipeline, described["intra_op_threads"], described["batch_curve"],
                             described["max_batch_size"], described["max_padded_tokens"], single_cpu)
