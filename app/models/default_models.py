"""Which model answers a `/predict` request that names none: one default model per input kind.

A kind's (`image`, `text`) default is chosen at start-up, first match wins:
1. `SERVE_DEFAULT_MODELS` (`image=NAME,text=NAME`), which must name a served model of that kind;
2. the served model of that kind whose config.json says `"default": true` (two of a kind fail start-up);
3. the only served model of that kind.
With several models of a kind and none chosen, the kind has no default: start-up logs how to choose one, and a
request of that kind that names no model gets 400 naming the choices.

Repository loads and unloads never move a default behind the operator's back:
- a model loaded later becomes its kind's default when its config says `"default": true`, or when it is then
  the only model of its kind and the kind's default is not loaded; never over `SERVE_DEFAULT_MODELS`;
- an unloaded default stays the default: until a model of that name is loaded again, a request of its kind
  that names no model gets 404 saying so, rather than another model's answer.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Literal

from app.errors import InvalidInput, ModelNotFound
from model_repository import ModelConfig

logger = logging.getLogger(__name__)

Task = Literal["image", "text"]
ChosenBy = Literal["SERVE_DEFAULT_MODELS", "config.json", "only model"]
TASKS: tuple[Task, ...] = ("image", "text")
HOW_TO_CHOOSE = "set SERVE_DEFAULT_MODELS={task}=NAME, or \"default\": true in that model's config.json"


class DefaultModelError(ValueError):
    """The configured defaults cannot be honoured; start-up fails with this message."""


@dataclass(frozen=True)
class DefaultModel:
    """The model that answers a kind's requests that name none, and what chose it."""

    name: str
    chosen_by: ChosenBy


class DefaultModels:
    """The default model of each kind, kept in step with the models served."""

    def __init__(self, from_settings: Mapping[Task, str]) -> None:
        self._from_settings = dict(from_settings)
        self._defaults: dict[Task, DefaultModel] = {}

    def choose(self, configs: Collection[ModelConfig], unreadable: Collection[str]) -> None:
        """Choose every kind's default among the served models at start-up (`unreadable`: configured models
        whose config could not be read, so of unknown kind). Raise `DefaultModelError` when the choice is
        impossible: a setting naming a model not served, or of the other kind, or two configs claiming one kind."""
        by_name = {config.name: config for config in configs}
        for task, name in self._from_settings.items():
            if name in by_name and by_name[name].task != task:
                raise DefaultModelError(f"SERVE_DEFAULT_MODELS names {name!r} as the {task} default, but it is "
                                        f"a {by_name[name].task} model")
            if name not in by_name and name not in unreadable:
                served = ", ".join(sorted([*by_name, *unreadable])) or "none"
                raise DefaultModelError(f"SERVE_DEFAULT_MODELS names {name!r} as the {task} default, but this "
                                        f"instance does not serve it (it serves: {served}; see SERVE_MODELS)")
            self._defaults[task] = DefaultModel(name, "SERVE_DEFAULT_MODELS")
        for task in TASKS:
            if task in self._defaults:
                continue
            of_task = sorted(name for name, config in by_name.items() if config.task == task)
            flagged = [name for name in of_task if by_name[name].default]
            if len(flagged) > 1:
                raise DefaultModelError(f"{' and '.join(flagged)} both say \"default\": true for {task} input; "
                                        f"keep it in one config.json, or {HOW_TO_CHOOSE.format(task=task)}")
            if flagged:
                self._defaults[task] = DefaultModel(flagged[0], "config.json")
            elif len(of_task) == 1:
                self._defaults[task] = DefaultModel(of_task[0], "only model")
            elif of_task:
                logger.warning("several %s models are served (%s) and none is the default: %s requests that name "
                               "no model will get 400; to choose one, %s", task, ", ".join(of_task), task,
                               HOW_TO_CHOOSE.format(task=task))
        for task, default in self._defaults.items():
            logger.info("default %s model: %s (chosen by %s)", task, default.name, default.chosen_by)

    def loaded(self, config: ModelConfig, served: Mapping[str, Task]) -> None:
        """A model was loaded through the repository API; `served` maps every model now served to its kind."""
        task = config.task
        current = self._defaults.get(task)
        if current is not None and current.chosen_by == "SERVE_DEFAULT_MODELS":
            return
        if config.default:
            chosen = DefaultModel(config.name, "config.json")
        elif (current is None or current.name not in served) and sum(kind == task for kind in served.values()) == 1:
            chosen = DefaultModel(config.name, "only model")
        else:
            return
        if current is None or current.name != chosen.name:
            replaced = f", in place of {current.name}" if current is not None else ""
            logger.warning("default %s model is now %s (chosen by %s%s)", task, chosen.name, chosen.chosen_by,
                           replaced)
        self._defaults[task] = chosen

    def unloaded(self, name: str) -> None:
        """A model was unloaded: say so when it was a default, which it stays (see the module's docstring)."""
        for task, default in self._defaults.items():
            if default.name == name:
                logger.warning("%s, the default %s model, was unloaded: %s requests that name no model get 404 "
                               "until it is loaded again", name, task, task)

    def name_for(self, task: Task, served: Mapping[str, Task], failed: Collection[str]) -> str:
        """The model that answers a `task` request naming none, of those `served` (name to kind) and those that
        `failed` to load (the lookup then says why); raise the error the client gets when there is none."""
        default = self._defaults.get(task)
        of_task = sorted(name for name, kind in served.items() if kind == task)
        if default is not None:
            if default.name in served or default.name in failed:
                return default.name
            others = f"name one of the loaded {task} models ({', '.join(of_task)})" if of_task else \
                f"no other {task} model is loaded"
            raise ModelNotFound(f"the default {task} model {default.name!r} is not loaded: {others} with the "
                                f"`model` parameter, or load {default.name} again")
        if len(of_task) > 1:
            raise InvalidInput(f"several {task} models are loaded ({', '.join(of_task)}) and none is the default: "
                               f"choose one with the `model` parameter, or {HOW_TO_CHOOSE.format(task=task)}")
        raise ModelNotFound(f"no {task} model is loaded; loaded models: {sorted(served) or 'none'}")

    def status(self, served: Collection[str]) -> dict[Task, dict[str, object]]:
        """Each kind's default for /health and /models: its name, what chose it, and whether it is loaded."""
        return {task: {"model": default.name, "chosen_by": default.chosen_by, "loaded": default.name in served}
                for task, default in sorted(self._defaults.items())}
