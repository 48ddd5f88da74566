"""SIGHUP re-reads the keys file, in every server process.

A server process calls `reload_on_sighup` from the app factory: SIGHUP then runs `reload` on its event loop. With
workers, SIGHUP goes to the supervisor (`python -m app`, PID 1 in a container), whose `HangupForwarding`
passes it on to each worker instead of uvicorn's default, which replaces every worker (reloading the models).
A worker that is still starting, before its factory ran, dies of it and is replaced, reading the file anew.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import signal
from collections.abc import Callable
from types import FrameType

from uvicorn.supervisors import Multiprocess

logger = logging.getLogger(__name__)


def reload_on_sighup(reload: Callable[[], None]) -> None:
    """Make SIGHUP call `reload` on this process's running event loop."""
    loop = asyncio.get_running_loop()

    def on_sighup(signum: int, frame: FrameType | None) -> None:
        # Out of the signal handler onto the event loop, outside whichever request's context was interrupted.
        loop.call_soon_threadsafe(reload, context=contextvars.Context())

    signal.signal(signal.SIGHUP, on_sighup)


class HangupForwarding(Multiprocess):
    """uvicorn's supervisor, passing SIGHUP on to its workers."""

    def handle_hup(self) -> None:
        pids = [process.pid for process in self.processes if process.pid is not None]
        logger.info("SIGHUP: passed on to the workers %s, which re-read the keys file", pids)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGHUP)
            except ProcessLookupError:  # it died meanwhile; its replacement reads the file as it starts
                continue
