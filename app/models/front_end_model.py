"""A model seen from a front-end worker of `SERVE_SHARED_INFERENCE`: the worker reads, decodes, tokenizes and
batches its own requests as a `ServedModel` does, and each batch runs in the inference process
(app.topology.inference_process), merged there with the batches of the other workers."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from app.models.served_model import ServedModel
from app.topology.inference_link import InferenceClient, link_path, wait_until_ready
from app.topology.workers import shared_directory
from model_repository import ModelConfig, ModelRepositoryError


class GraphTensor(NamedTuple):
    name: str


class RemoteSession:
    """The part of `ort.InferenceSession` that `ServedModel` uses, for a session held by the inference process.

    Created once the model is ready there; `description` holds what the inference process measured."""

    def __init__(self, client: InferenceClient, config: ModelConfig) -> None:
        self._client = client
        self._config = config
        self.description: dict[str, Any] = wait_until_ready(client, config.name, config.version)
        if self.description["state"] != "ready":
            raise ModelRepositoryError(f"the inference process cannot serve it: {self.description['error']}")

    def get_providers(self) -> list[str]:
        return [self.description["provider"]]

    def get_inputs(self) -> list[GraphTensor]:
        return [GraphTensor(spec.name) for spec in self._config.inputs]

    def get_outputs(self) -> list[GraphTensor]:
        return [GraphTensor(spec.name) for spec in self._config.outputs]

    def run(self, output_names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The batch's outputs, computed in the inference process."""
        return self._client.call(("run", self._config.name, self._config.version, output_names, feeds))


class FrontEndModel(ServedModel):
    """A model whose batches run in the inference process; this worker records its requests' waits, the
    inference process the batches it runs."""

    records_session_runs = False

    def _verify_file(self) -> None:
        """Nothing to do: the inference process, which reads the ONNX file, verified it."""

    def _create_session(self, intra_op_threads: int) -> RemoteSession:  # type: ignore[override]
        directory = shared_directory()
        if directory is None:
            raise ModelRepositoryError("SERVE_SHARED_INFERENCE needs `python -m app`, which starts the inference "
                                       "process")
        return RemoteSession(InferenceClient(link_path(directory)), self.config)

    def _warm_up(self) -> None:
        """Batch as the inference process measured, and send a batch of one through the link and back."""
        assert isinstance(self._session, RemoteSession)
        described = self._session.description
        self.max_batch_size = described["max_batch_size"]
        self.max_padded_tokens = described["max_padded_tokens"]
        self.batch_curve = described["batch_curve"]
        self.intra_op_threads = described["intra_op_threads"]
        for _ in range(max(1, self._settings.warmup_runs)):
            self._run_warm_up_batch(1)

    def _batch_runs_inline(self, rows: int) -> bool:
        """Never: the batch waits on another process, and the event loop must not."""
        return False
