"""HTTPS served by the process itself (`SERVE_TLS_CERT_FILE`, `SERVE_TLS_KEY_FILE`): uvicorn's own TLS options.

`tls_options` checks once, before any server process starts, that the certificate and key load together, so a
missing, unreadable or mismatched file stops `python -m app` with one clear line rather than a traceback in
every worker. The files are read when the service starts: a renewed certificate takes effect on restart.
"""

from __future__ import annotations

import ssl
from typing import Any

from app.settings import Settings


class TlsUnusable(Exception):
    """The certificate or key cannot be served: missing, unreadable, not PEM, or not a pair."""


def tls_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's `ssl_certfile` and `ssl_keyfile` when the settings name them (none for plain HTTP); raise
    `TlsUnusable` when they cannot be loaded together."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return {}
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(settings.tls_cert_file,
                                                                            settings.tls_key_file)
    except (OSError, ssl.SSLError) as exc:
        raise TlsUnusable(f"cannot serve HTTPS with SERVE_TLS_CERT_FILE={settings.tls_cert_file} and "
                          f"SERVE_TLS_KEY_FILE={settings.tls_key_file}: {exc}") from None
    return {"ssl_certfile": str(settings.tls_cert_file), "ssl_keyfile": str(settings.tls_key_file)}
