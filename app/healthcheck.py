"""`python -m app.healthcheck`: exit 0 when the local service answers its liveness route, else 1.

The container's HEALTHCHECK runs it, so the image needs no curl. It reads the port from the settings, and
sends an API key when `SERVE_PUBLIC_HEALTH=false` closes the health routes.

With `SERVE_TLS_CERT_FILE` set it asks over HTTPS, without verifying the certificate. The probe connects to
127.0.0.1 in the service's own host or container, where no one can stand between it and the server, so
verification would protect nothing; and a certificate issued for the service's public name does not name
127.0.0.1, so verifying it would fail for every certificate but one made for the loopback address.
"""

from __future__ import annotations

import ssl
import sys
import urllib.request

from app.settings import Settings

TIMEOUT_S = 3.0


def loopback_tls_context() -> ssl.SSLContext:
    """TLS for the loopback probe: encrypted, the certificate not checked (see the module's docstring)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def main() -> int:
    settings = Settings()
    url = f"{settings.url_scheme}://127.0.0.1:{settings.port}/health/live"
    headers = {} if settings.public_health else {"X-API-Key": settings.accepted_api_keys()[0]}
    context = loopback_tls_context() if settings.url_scheme == "https" else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S,
                                    context=context) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
