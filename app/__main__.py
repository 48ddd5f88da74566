"""`python -m app`: serve with uvicorn on SERVE_HOST:SERVE_PORT (HTTPS with SERVE_TLS_*: app.topology.tls), and
gRPC on SERVE_GRPC_PORT when set (app.transport.grpc), in the processes the settings ask for
(app.topology.topology), with the request head limits and arrival stamps (app.transport.http.limits) and the
SIGTERM intake stop (app.topology.shutdown). It is the one supported way to
run the service: the app factory refuses to start in a process it did not hand a role to."""

from __future__ import annotations

import logging
import signal
import sys

from fastapi import FastAPI
from uvicorn.config import STARTUP_FAILURE

from app import keys_command
from app.observability.logs import configure_logging
from app.observability.tracing import TracingMisconfigured, configure_tracing, exporter_choice, wanted
from app.settings import Settings
from app.topology.hangup import reload_on_sighup
from app.topology.roles import NoRoleHandedOver, ServerRole
from app.topology.shutdown import defer_sigterm
from app.topology.tls import TlsUnusable, tls_options
from app.topology.topology import choose_topology
from app.transport.grpc.server import GrpcTransport
from app.transport.http.application import create_app
from app.transport.http.limits import LimitedHttpToolsProtocol

APP_FACTORY = "app.__main__:create_served_app"

logger = logging.getLogger(__name__)


def create_served_app() -> FastAPI:
    """The app of one server process (uvicorn's factory, called as it starts serving): settings and logging
    come from the environment, the process's role from `python -m app`; SIGTERM first stops intake, SIGHUP
    re-reads the keys file."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    try:
        role = ServerRole.handed_over()
        configure_tracing("server")
    except (NoRoleHandedOver, TracingMisconfigured) as exc:
        logger.error("%s", exc)
        sys.exit(STARTUP_FAILURE)
    # Several processes share the gRPC port as they share the HTTP one (app.topology.reuse_port).
    transports = [GrpcTransport(settings, reuse_port=role.directory is not None)] if settings.grpc_port else []
    app = create_app(settings, role, transports)
    defer_sigterm(app.state.registry.stop_intake, settings.shutdown_delay_s)
    reload_on_sighup(app.state.dataplane.access.reload_keys)
    return app


def main() -> None:
    settings = Settings()
    # uvicorn re-raises SIGTERM once its graceful shutdown is done; a drained shutdown is a clean exit.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    configure_logging(settings.log_level, settings.log_format)
    options = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,  # uvicorn's loggers go through the root handler configure_logging set up
        "log_level": settings.log_level,
        "access_log": settings.access_log,
        "timeout_graceful_shutdown": settings.graceful_shutdown_s,
        "http": LimitedHttpToolsProtocol,
        "h11_max_incomplete_event_size": settings.max_header_bytes,  # the head limit LimitedHttpToolsProtocol applies
    }
    try:
        options |= tls_options(settings)
        if wanted():  # each server process sets tracing up; a bad exporter stops the service here, once
            exporter_choice()
    except (TlsUnusable, TracingMisconfigured) as exc:
        logger.error("%s", exc)
        sys.exit(STARTUP_FAILURE)
    choose_topology(settings).run(APP_FACTORY, options)


if __name__ == "__main__":
    if sys.argv[1:2] == ["keys"]:  # `python -m app keys add ...`: app.keys_command
        sys.exit(keys_command.main(sys.argv[2:]))
    main()
