"""`python -m app`: serve with uvicorn on SERVE_HOST:SERVE_PORT."""

from __future__ import annotations

import signal
import sys

import uvicorn

from app.logs import configure_logging
from app.main import create_app
from app.settings import Settings


def main() -> None:
    settings = Settings()
    # uvicorn re-raises SIGTERM once its graceful shutdown is done; a drained shutdown is a clean exit.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    configure_logging(settings.log_level, settings.log_format)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,  # uvicorn's loggers go through the root handler configure_logging set up
        log_level=settings.log_level,
        access_log=settings.access_log,
        timeout_graceful_shutdown=settings.graceful_shutdown_s,
    )


if __name__ == "__main__":
    main()
