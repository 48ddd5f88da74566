"""How each process of the topology makes the models it serves: the loader and the intake a `ServedModel`
(app.models.served_model) is composed of.

- `local_models`: one process, or each worker: sessions in this process, for this process's clients.
- `front_end_models`: a front-end worker of `SERVE_SHARED_INFERENCE`: its clients' requests, whose batches run
  in the inference process, over a link of their own for each model.
- `inference_process_models`: the inference process: sessions in this process, for the workers' batches.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from app.intake_load import IntakeLoad
from app.models.intake import ClientIntake, WorkerBatchIntake
from app.models.loading import LocalLoader
from app.models.served_model import ModelFactory, ServedModel
from app.observability.metrics import Metrics
from app.settings import Settings
from app.topology.front_end import InferenceProcessLoader
from app.topology.inference_link import InferenceClient, link_path
from model_repository import ModelConfig

# Held while a model times its batch sizes and threads (app.topology.workers.one_worker_at_a_time).
TimingTurn = Callable[[], AbstractContextManager[None]]


def local_models(settings: Settings, metrics: Metrics, load: IntakeLoad, timing_turn: TimingTurn) -> ModelFactory:
    """Models whose sessions run here, for this process's clients, whose intake is as busy as `load`; each
    times itself at warm-up in its `timing_turn`."""
    intake = ClientIntake(load)

    def make(config: ModelConfig, directory: Path) -> ServedModel:
        return ServedModel(config, directory, LocalLoader(config, directory, settings, timing_turn), intake, settings, metrics)

    return make


def front_end_models(settings: Settings, metrics: Metrics, load: IntakeLoad, shared_directory: Path) -> ModelFactory:
    """Models whose batches run in the inference process listening in `shared_directory`, for this process's
    clients, whose intake is as busy as `load`."""
    intake, path = ClientIntake(load), link_path(shared_directory)

    def make(config: ModelConfig, directory: Path) -> ServedModel:
        loader = InferenceProcessLoader(config, directory, settings, InferenceClient(path))
        return ServedModel(config, directory, loader, intake, settings, metrics)

    return make


def inference_process_models(settings: Settings, metrics: Metrics, timing_turn: TimingTurn) -> ModelFactory:
    """Models whose sessions run here, for the batches of the front-end workers; each times itself at warm-up
    in its `timing_turn`."""
    intake = WorkerBatchIntake()

    def make(config: ModelConfig, directory: Path) -> ServedModel:
        return ServedModel(config, directory, LocalLoader(config, directory, settings, timing_turn), intake, settings, metrics)

    return make
