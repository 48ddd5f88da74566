"""`python -m app.healthcheck`: exit 0 when the local service answers its liveness route, else 1.

The container's HEALTHCHECK runs it, so the image needs no curl. It reads the port from the settings, and
sends an API key when `SERVE_PUBLIC_HEALTH=false` closes the health routes.
"""

from __future__ import annotations

import sys
import urllib.request

from app.settings import Settings

TIMEOUT_S = 3.0


def main() -> int:
    settings = Settings()
    url = f"http://127.0.0.1:{settings.port}/health/live"
    headers = {} if settings.public_health else {"X-API-Key": settings.accepted_api_keys()[0]}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
