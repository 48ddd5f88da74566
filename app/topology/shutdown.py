"""Stopping on SIGTERM without losing a request, for load balancers that route by `/health/ready`.

On SIGTERM, at once: readiness turns false and new requests are refused with 503 `shutting_down` (with
Retry-After and `Connection: close`), while the socket stays open for `SERVE_SHUTDOWN_DELAY_S`, so that a
load balancer polling readiness stops sending here and clients learn to go elsewhere instead of finding the
port closed. Requests already queued or running go on meanwhile. Then uvicorn's own graceful shutdown runs:
it stops listening, waits up to `SERVE_GRACEFUL_SHUTDOWN_S` for the requests in flight, and the lifespan
drains the model queues. The same happens in every worker process, to which uvicorn's supervisor passes
SIGTERM on.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import signal
from collections.abc import Callable
from types import FrameType

import uvicorn

logger = logging.getLogger(__name__)


def defer_sigterm(stop_intake: Callable[[], None], delay_s: float) -> None:
    """Make SIGTERM call `stop_intake` at once, and reach uvicorn's server `delay_s` seconds later.

    Call it from the app factory: uvicorn loads the app after its server has taken over SIGTERM, in the
    worker processes as in a single one. This wraps that handler; TypeError if it is not uvicorn's.
    """
    handler = signal.getsignal(signal.SIGTERM)
    server = getattr(handler, "__self__", None)
    if not isinstance(server, uvicorn.Server):
        raise TypeError(f"defer_sigterm() needs a uvicorn server handling SIGTERM, not {handler!r}")
    loop = asyncio.get_running_loop()

    def stop(signum: int) -> None:
        stop_intake()
        logger.info("SIGTERM: not ready and refusing new requests; stopping in %g s", delay_s)
        loop.call_later(delay_s, server.handle_exit, signum, None)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        # Out of the signal handler onto the event loop, outside whichever request's context was interrupted.
        loop.call_soon_threadsafe(stop, signum, context=contextvars.Context())

    signal.signal(signal.SIGTERM, on_sigterm)
