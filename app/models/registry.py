"""The set of models this instance serves: discovery, background loading, readiness and lookup."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from app.errors import IntakeStopped, InvalidInput, ModelLoadFailed, ModelNotFound, ModelNotReady
from app.models.default_models import DefaultModelError, DefaultModels, Task
from app.models.served_model import ModelFactory, ServedModel
from app.observability.metrics import Metrics
from app.settings import Settings
from model_repository import ModelRepositoryError, discover_models, latest_version, load_config, version_dir

logger = logging.getLogger(__name__)


class ReadinessBoard(Protocol):
    """Where the worker processes say whether they are ready (app.topology.workers.WorkerBoard)."""

    def publish(self, ready: bool) -> None: ...

    def all_ready(self) -> bool: ...

    def leave(self) -> None: ...


class StartupFailed(RuntimeError):
    """A configured model cannot be served and `SERVE_STRICT_STARTUP` asks for start-up to fail."""


async def _run_in_daemon_thread(function: Callable[[], None], name: str) -> None:
    """Run `function` on a daemon thread, so a shutdown during a long load or warm-up need not wait for it."""
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()

    def target() -> None:
        try:
            function()
        finally:
            if not loop.is_closed():
                loop.call_soon_threadsafe(lambda: finished.done() or finished.set_result(None))

    threading.Thread(target=target, name=name, daemon=True).start()
    await finished


class ModelRegistry:
    """Every configured model, whether it loaded or not, so health can say what is missing and why.

    Over 150 lines because discovery, loading, the version swap, unloading, draining and lookup all change or
    read one mapping of served models under one lock, and keep the readiness board in step; what is a kind's
    default lives apart (app.models.default_models)."""

    def __init__(self, settings: Settings, metrics: Metrics, make_model: ModelFactory,
                 workers: ReadinessBoard | None = None) -> None:
        self._settings = settings
        self._metrics = metrics
        self.workers = workers  # the other worker processes, when there are several
        self._make_model = make_model  # what each process's models are made of (app.topology.model_factories)
        self.models: dict[str, ServedModel] = {}
        self.failures: dict[str, str] = {}  # configured models that could not even be read from disk
        self.defaults = DefaultModels(settings.default_model_choice())
        self._swapping = asyncio.Lock()  # one load or unload at a time
        self.stopping = False  # set by stop_intake(), once the process is told to stop

    def discover(self) -> None:
        """Read every selected model's config; a model that cannot be read is recorded as failed. Raise
        `StartupFailed` when the default models cannot be chosen as configured (app.models.default_models)."""
        root = self._settings.models_dir
        selection = self._settings.model_selection()
        try:
            available = discover_models(root)
        except ModelRepositoryError as exc:
            available = {}
            self.failures["<repository>"] = str(exc)
        for name, pinned in (selection or dict.fromkeys(available)).items():
            versions = available.get(name, [])
            version = pinned if pinned is not None else latest_version(root / name)
            if version is None or version not in versions:
                wanted = f"version {pinned}" if pinned is not None else "any version"
                self.failures[name] = f"model {name!r} ({wanted}) is not in {root}"
                continue
            try:
                config = load_config(version_dir(root, name, version))
                if config.name != name or config.version != version:
                    raise ModelRepositoryError(
                        f"{name}/{version}/config.json names {config.name!r} version {config.version}"
                    )
            except ModelRepositoryError as exc:
                self.failures[name] = str(exc)
                continue
            self.models[name] = self._make_model(config, version_dir(root, name, version))
        for name, reason in self.failures.items():
            logger.error("cannot serve %s: %s", name, reason)
            self._metrics.model_ready.labels(name).set(0)
        try:
            self.defaults.choose([model.config for model in self.models.values()], self.failures)
        except DefaultModelError as exc:
            raise StartupFailed(str(exc)) from None
        if self.workers is not None:
            self.workers.publish(False)

    async def load_all(self) -> None:
        """Load and warm every model, one after another, opening each to traffic as soon as it is ready.

        With `strict_startup`, raise `StartupFailed` at the first model that cannot be served instead.
        """
        strict = self._settings.strict_startup
        if strict and self.failures:
            reasons = (f"cannot serve {name}: {reason}" for name, reason in self.failures.items())
            raise StartupFailed("; ".join(reasons))
        for model in self.models.values():
            self._metrics.model_ready.labels(model.name).set(0)
            await _run_in_daemon_thread(model.load, f"load-{model.name}")
            if model.error is not None and strict:
                raise StartupFailed(f"cannot serve {model.name}: {model.error}")
            if model.error is None:
                self._open(model)
        if self.ready_here:  # said before /health/ready can answer 200
            worker = "" if self.workers is None else " (this worker; /health/ready is 200 once every worker is)"
            logger.info("ready: serving %s on %s://%s:%d%s", ", ".join(sorted(self.models)),
                        self._settings.url_scheme, self._settings.host, self._settings.port, worker)
        if self.workers is not None:
            self.workers.publish(self.ready_here)

    async def load(self, name: str) -> ServedModel:
        """Serve the latest version of `name` in the repository, with no request failing meanwhile.

        The new version loads and warms up beside the one serving; once ready, traffic switches to it at once
        (the lookup and the enqueue of a request happen in one step of the event loop, so each request goes
        wholly to one version), then the old version answers what it had queued and is freed. A version that
        cannot be served raises `ModelLoadFailed` and the old one keeps serving.
        """
        async with self._swapping:
            root = self._settings.models_dir
            version = latest_version(root / name) if (root / name).is_dir() else None
            if version is None:
                raise ModelNotFound(f"no model named {name!r} in the model repository")
            directory = version_dir(root, name, version)
            try:
                config = load_config(directory)
            except ModelRepositoryError as exc:
                raise ModelLoadFailed(f"cannot load {name} version {version}: {exc}") from None
            model = self._make_model(config, directory)
            await _run_in_daemon_thread(model.load, f"load-{name}-{version}")
            old = self.models.get(name)
            if model.error is not None:
                keeps = f"; version {old.config.version} keeps serving" if old is not None else ""
                raise ModelLoadFailed(f"cannot serve {name} version {version}: {model.error}{keeps}")
            self._open(model)
            self.models[name] = model
            self.failures.pop(name, None)
            self.defaults.loaded(config, self._tasks())
            logger.info("model %s: version %d serving", name, version)
            if old is not None:
                await self._retire(old, replaced=old.config.version != version)
            return model

    def _open(self, model: ServedModel) -> None:
        """Start a loaded model's batcher and say so in the metrics."""
        model.start()
        config = model.config
        self._metrics.model_info.labels(model.name, str(config.version), config.task, model.provider).set(1)
        self._metrics.model_ready.labels(model.name).set(1)

    async def unload(self, name: str) -> None:
        """Stop serving `name`: it answers what it had queued, then is freed; later requests get 404."""
        async with self._swapping:
            model = self.models.pop(name, None)
            if model is None:
                raise ModelNotFound(f"no model named {name!r} is loaded; loaded models: {sorted(self.models)}")
            self._metrics.model_ready.labels(name).set(0)
            self.defaults.unloaded(name)
            await self._retire(model, replaced=True)

    async def _retire(self, model: ServedModel, replaced: bool) -> None:
        await model.drain()
        if replaced:
            self._metrics.model_info.remove(model.name, str(model.config.version), model.config.task, model.provider)
        logger.info("model %s: version %d drained and freed", model.name, model.config.version)

    async def drain(self) -> None:
        """Stop intake and answer everything queued, for every model."""
        if self.workers is not None:
            self.workers.publish(False)
        await asyncio.gather(*(model.drain() for model in self.models.values()))
        for model in self.models.values():
            self._metrics.model_ready.labels(model.name).set(0)
        if self.workers is not None:
            self.workers.leave()

    def stop_intake(self) -> None:
        """The process is stopping: not ready from now on, and new requests are refused with 503
        `shutting_down`; those already queued or running still get their answers."""
        self.stopping = True
        if self.workers is not None:
            self.workers.publish(False)

    def _refuse_when_stopping(self) -> None:
        """Once stop_intake() was called, raise IntakeStopped."""
        if self.stopping:
            raise IntakeStopped("this server is shutting down; retry, another one will answer")

    @property
    def ready_here(self) -> bool:
        """True only when every configured model is ready in this process, there is at least one, and the
        process is not stopping."""
        return (not self.stopping and bool(self.models) and not self.failures
                and all(model.ready for model in self.models.values()))

    @property
    def ready(self) -> bool:
        """Ready here and, with several workers, in every one of them."""
        return self.ready_here and (self.workers is None or self.workers.all_ready())

    def get(self, name: str) -> ServedModel:
        self._refuse_when_stopping()
        model = self.models.get(name)
        if model is None:
            if name in self.failures:
                raise ModelNotReady(f"model {name!r} is not available: {self.failures[name]}", retry_after=30)
            raise ModelNotFound(f"no model named {name!r}; loaded models: {sorted(self.models) or 'none'}")
        return model

    def select(self, name: str | None, task: Task) -> ServedModel:
        """The model named, or `task`'s default model (app.models.default_models) when no name is given."""
        if not name:
            self._refuse_when_stopping()
            return self.get(self.defaults.name_for(task, self._tasks(), self.failures))
        model = self.get(name)
        if model.config.task != task:
            raise InvalidInput(f"model {name!r} takes {model.config.task} input; it cannot take {task} input")
        return model

    def _tasks(self) -> dict[str, Task]:
        """Every model served, to the kind of input it takes."""
        return {name: model.config.task for name, model in self.models.items()}

    def default_models(self) -> dict[Task, dict[str, object]]:
        """Each input kind's default model, what chose it and whether it is loaded."""
        return self.defaults.status(self.models)

    def status(self) -> list[dict[str, Any]]:
        found = [model.status() for model in self.models.values()]
        missing = [
            {"name": name, "version": None, "task": None, "state": "failed", "provider": None, "error": reason}
            for name, reason in self.failures.items()
        ]
        return found + missing
