"""`DataPlane`: the operations every transport calls, on typed values.

Each request operation comes in two steps, so that a transport can name the model in its logs and metrics
before the request runs, and keep its own order of checks: `predict_model` / `model` find the model (and
check the request's limits), then `predict` / `infer` run it. Nothing awaits between finding the model and
queueing the request, so a model swap (`load`) cannot come between them. Between the two, once it has checked
the key's scope, the transport runs the request inside `admit(key, model)`: the key's quotas.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.dataplane import metadata
from app.dataplane.access import AccessPolicy
from app.dataplane.keys import Key
from app.dataplane.predict import PredictInputs, check_limits
from app.dataplane.quotas import Admission, Quotas
from app.dataplane.tensors import EncodedItems, ModelInputs, model_inputs
from app.errors import ModelNotFound
from app.models.registry import ModelRegistry
from app.models.served_model import ServedModel
from app.settings import Settings


@dataclass(frozen=True, slots=True)
class Readiness:
    """Whether the server takes requests; if not, why, and the state or error of each model not ready."""

    ready: bool
    reason: str | None
    models_not_ready: dict[str, str]


class DataPlane:
    """Predictions, v2 inference, metadata, readiness and repository operations over the served models."""

    def __init__(self, settings: Settings, registry: ModelRegistry, quotas: Quotas) -> None:
        self.settings = settings
        self.registry = registry
        self.access = AccessPolicy(settings)
        self.quotas = quotas

    def admit(self, key: Key | None, model: ServedModel) -> Admission:
        """A place for one request of `key` (None: no key was needed) to `model` within the key's rate and
        in-flight limits, held until the returned context's block ends; `RateLimited` when they are used up."""
        return self.quotas.admit(key, model.name)

    # /predict ----------------------------------------------------------------------------------------

    def predict_model(self, inputs: PredictInputs) -> ServedModel:
        """The model to answer `inputs` (the one it names, else its kind's default), once its limits hold."""
        check_limits(inputs, self.settings)
        return self.registry.select(inputs.model, inputs.kind)

    async def predict(self, model: ServedModel, inputs: PredictInputs, deadline: float,
                      gone: Callable[[], bool]) -> dict[str, Any]:
        """The answer, ready to serialize: model, version, and the prediction (or `predictions` for a list), by
        `deadline` (a `time.perf_counter()` value); not run if `gone()` is true when its batch forms."""
        predictions = await model.predict(inputs.kind, inputs.items, inputs.top_k or self.settings.default_top_k,
                                          deadline, gone)
        if inputs.is_list:
            return {"model": model.name, "version": model.config.version, "predictions": predictions}
        return {"model": model.name, "version": model.config.version, **predictions[0]}

    # Open Inference Protocol v2 ----------------------------------------------------------------------

    def model(self, name: str, version: str | None = None) -> ServedModel:
        """The model serving `name`, which must be at `version` when one is given."""
        model = self.registry.get(name)
        if version is not None and version != str(model.config.version):
            raise ModelNotFound(f"model {name!r} is served at version {model.config.version}, not {version!r}")
        return model

    def rows(self, model: ServedModel, tensors: dict[str, np.ndarray]) -> ModelInputs:
        """The request's inputs for `model` (`tensors.model_inputs`): rows of its tensors, or its texts or encoded
        images, which keep `/predict`'s limits (items per request, text length)."""
        inputs = model_inputs(model, tensors)
        if isinstance(inputs, EncodedItems):
            check_limits(PredictInputs(inputs.kind, inputs.items, True, model.name, None), self.settings)
        return inputs

    @staticmethod
    async def infer(model: ServedModel, inputs: ModelInputs, output_names: tuple[str, ...], deadline: float,
                    gone: Callable[[], bool]) -> dict[str, np.ndarray]:
        """The output tensors (`output_names`, or all when empty) of `inputs`, each stacked back into a batch."""
        if isinstance(inputs, EncodedItems):
            answers = await model.infer_items(inputs.kind, inputs.items, output_names, deadline, gone)
        else:
            answers = await model.infer(inputs, output_names, deadline, gone)
        return {key: np.stack([answer[key] for answer in answers]) for key in answers[0]}

    @staticmethod
    def server_metadata() -> metadata.ServerMetadata:
        return metadata.server_metadata()

    def model_metadata(self, name: str, version: str | None = None) -> metadata.ModelMetadata:
        return metadata.model_metadata(self.model(name, version))

    def model_configuration(self, name: str, version: str | None = None) -> metadata.ModelConfiguration:
        return metadata.model_configuration(self.model(name, version))

    def model_ready(self, name: str, version: str | None = None) -> metadata.ModelReadiness:
        model = self.model(name, version)
        return metadata.ModelReadiness(model.name, model.ready)

    # Health ------------------------------------------------------------------------------------------

    @staticmethod
    def live() -> bool:
        """True while the process answers: a transport that can call this is live."""
        return True

    def ready(self) -> bool:
        """Whether every configured model is loaded and warmed up, and the server is not shutting down."""
        return self.registry.ready

    def readiness(self) -> Readiness:
        registry = self.registry
        if registry.ready:
            return Readiness(True, None, {})
        not_ready = {item["name"]: item["error"] or item["state"] for item in registry.status()
                     if item["state"] != "ready"}
        if registry.stopping:
            reason = "shutting down"
        elif not registry.models and not registry.failures:
            reason = "no models configured"
        elif registry.ready_here and registry.workers is not None and not registry.workers.inference_ready():
            reason = "the inference process is not ready (starting, or starting again after it stopped)"
        elif registry.ready_here and registry.workers is not None:
            ready_workers = sum(registry.workers.workers().values())
            reason = f"{ready_workers} of {registry.workers.expected} worker processes ready"
        else:
            reason = "models not ready"
        return Readiness(False, reason, not_ready)

    # The model repository ----------------------------------------------------------------------------

    async def load(self, name: str) -> ServedModel:
        """Serve the latest version of `name` in the repository: it loads and warms up beside the version
        serving, takes the traffic once ready, and the old version finishes its queue and is freed."""
        return await self.registry.load(name)

    async def unload(self, name: str) -> None:
        """Stop serving `name`: queued requests are answered, later ones get `ModelNotFound`."""
        await self.registry.unload(name)
