"""Who may do what: the API key check every transport makes, in one place.

When keys are configured (`SERVE_API_KEY`, `SERVE_API_KEYS`), model operations need one; health and metrics
need one only when `SERVE_PUBLIC_HEALTH` / `SERVE_PUBLIC_METRICS` are false; repository operations always
need one, so with no key configured they are closed. A transport finds the key in its own way (HTTP:
`X-API-Key` or a bearer token) and calls `AccessPolicy.check`.
"""

from __future__ import annotations

import hashlib
import hmac
from enum import Enum

from app.errors import Forbidden, Unauthorized
from app.settings import Settings


class Operation(Enum):
    MODELS = "models"  # predict, v2 infer, model metadata and configuration, the model list
    HEALTH = "health"  # liveness and readiness, server and model
    METRICS = "metrics"
    REPOSITORY = "repository"  # loading and unloading models


class AccessPolicy:
    """The key check of each operation under `settings`."""

    def __init__(self, settings: Settings) -> None:
        self._digests = tuple(settings.api_key_digests)
        keyed = bool(self._digests)
        self._requires_key = {
            Operation.MODELS: keyed,
            Operation.HEALTH: keyed and not settings.public_health,
            Operation.METRICS: keyed and not settings.public_metrics,
            Operation.REPOSITORY: True,
        }

    def requires_key(self, operation: Operation) -> bool:
        """Whether `operation` needs a key: a transport need not look for one where it does not."""
        return self._requires_key[operation]

    def check(self, key: str | None, operation: Operation) -> None:
        """Raise `Unauthorized` unless `key` (None when none was given) may do `operation`; `Forbidden` for a
        repository operation when no key is configured.

        The key's SHA-256 is compared with every accepted key's, each comparison in constant time and none
        skipped, so the time taken tells nothing about the keys, their lengths or which one matched.
        """
        if not self._requires_key[operation]:
            return
        if not self._digests:
            raise Forbidden("the model repository routes need an API key configured (SERVE_API_KEY or SERVE_API_KEYS)")
        digest = hashlib.sha256(key.encode()).digest() if key is not None else b""
        matched = False
        for accepted in self._digests:
            matched |= hmac.compare_digest(digest, accepted)
        if not matched:
            raise Unauthorized("missing or wrong API key: send it as `X-API-Key: <key>` or `Authorization: Bearer <key>`",
                               key_given=key is not None)
