"""What one server process is in the topology that `python -m app` chose (app.topology.topology), handed to it
explicitly.

The topology writes the role into the environment variable `MODELSERVER_SERVER_ROLE` before uvicorn starts the
server processes, which inherit it; the app factory reads it back with `ServerRole.handed_over()`. A server
started any other way (uvicorn's command line, say) has no role, and refuses to start: it would serve without
the head limits, the arrival stamps or the SIGTERM intake stop, and could not honour `SERVE_WORKERS` or
`SERVE_SHARED_INFERENCE`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from app.topology.workers import WARM_UP_TIMING, WorkerBoard, one_worker_at_a_time

ROLE_ENV = "MODELSERVER_SERVER_ROLE"
NOT_HANDED_OVER = (f"no {ROLE_ENV}: the app is served by `python -m app`, which chooses the processes from the "
                   "settings and serves with the request head limits, the arrival stamps and the SIGTERM intake "
                   "stop; run `python -m app`")


class NoRoleHandedOver(RuntimeError):
    """The process was not started by `python -m app`."""


@dataclass(frozen=True)
class ServerRole:
    """One server process: alone (`directory` None), or one of `workers` worker processes sharing `directory`,
    whose batches run in the inference process when `shared_inference`."""

    workers: int
    directory: Path | None
    shared_inference: bool

    def __post_init__(self) -> None:
        if self.shared_inference and self.directory is None:
            raise ValueError("the workers of a shared inference process share a directory with it")

    def board(self) -> WorkerBoard | None:
        """This process's place on the readiness board it shares with the others; None when it runs alone."""
        if self.directory is None:
            return None
        return WorkerBoard(self.directory, self.workers, shared_inference=self.shared_inference)

    def timing_turn(self) -> Callable[[], AbstractContextManager[None]]:
        """The turn this process waits for to time its models at warm-up: one worker at a time; alone, at once."""
        if self.directory is None:
            return nullcontext
        return partial(one_worker_at_a_time, self.directory, WARM_UP_TIMING)

    def hand_over(self) -> None:
        """Set the role for the server processes started from here on."""
        os.environ[ROLE_ENV] = json.dumps({
            "workers": self.workers,
            "directory": None if self.directory is None else str(self.directory),
            "shared_inference": self.shared_inference,
        })

    @classmethod
    def handed_over(cls) -> ServerRole:
        """The role `python -m app` handed this process; `NoRoleHandedOver` when it handed none."""
        given = os.environ.get(ROLE_ENV)
        if given is None:
            raise NoRoleHandedOver(NOT_HANDED_OVER)
        fields = json.loads(given)
        directory = fields["directory"]
        return cls(fields["workers"], None if directory is None else Path(directory), fields["shared_inference"])
