"""Who may do what: the API key check every transport makes, in one place.

When keys are configured (`SERVE_API_KEY`, `SERVE_API_KEYS`, `SERVE_API_KEYS_FILE`: app.dataplane.keys),
model operations need one; health and metrics need one only when `SERVE_PUBLIC_HEALTH` /
`SERVE_PUBLIC_METRICS` are false; repository operations always need one, so with no key configured they are
closed. A key of role `infer` may do every operation but the repository's; `admin` may do them all; a key with
`models` may name only those. A transport reads the key from its headers or metadata (`given_key`: `x-api-key`,
or `authorization: Bearer <key>`), calls `AccessPolicy.check`, and checks the model it chose itself (the
default one) with `check_model`.
"""

from __future__ import annotations

import hmac
from enum import Enum

from app.dataplane.keys import Key, KeyStore, Role, digest_of
from app.errors import Forbidden, Unauthorized
from app.settings import Settings


class Operation(Enum):
    MODELS = "models"  # predict, v2 infer, model metadata and configuration, the model list
    HEALTH = "health"  # liveness and readiness, server and model
    METRICS = "metrics"
    REPOSITORY = "repository"  # loading and unloading models


def given_key(x_api_key: str | None, authorization: str | None) -> str | None:
    """The key a request sent as `x-api-key`, else as a bearer token in `authorization`; None when there is
    none (or it is empty)."""
    given = x_api_key
    if given is None:
        scheme, _, token = (authorization or "").partition(" ")
        given = token if scheme.lower() == "bearer" else None
    return given or None


class AccessPolicy:
    """The key check of each operation under `settings`."""

    def __init__(self, settings: Settings) -> None:
        self._store = KeyStore(settings.accepted_api_keys(), settings.api_keys_file)
        keyed = self._store.configured
        self._requires_key = {
            Operation.MODELS: keyed,
            Operation.HEALTH: keyed and not settings.public_health,
            Operation.METRICS: keyed and not settings.public_metrics,
            Operation.REPOSITORY: True,
        }

    def reload_keys(self) -> None:
        """Re-read the keys file now, changed or not (a malformed one keeps the keys, as always)."""
        self._store.reload()

    def requires_key(self, operation: Operation) -> bool:
        """Whether `operation` needs a key: a transport need not look for one where it does not."""
        return self._requires_key[operation]

    def check(self, key: str | None, operation: Operation, model: str | None = None) -> Key | None:
        """The accepted key `key` (None when none was given) may do `operation` on `model` (None: no model
        named); it is returned, or None when `operation` needs no key. `Unauthorized` for a missing or wrong
        key; `Forbidden` for one outside its role or models, or for a repository operation when no key is
        configured.

        The key's SHA-256 is compared with every accepted key's, each comparison in constant time and none
        skipped, so the time taken tells nothing about the keys, their lengths or which one matched.
        """
        if not self._requires_key[operation]:
            return None
        if not self._store.configured:
            raise Forbidden("the model repository routes need an API key configured (SERVE_API_KEY, "
                            "SERVE_API_KEYS or SERVE_API_KEYS_FILE)")
        digest = digest_of(key) if key is not None else b""
        matched: Key | None = None
        for accepted in self._store.current():
            if hmac.compare_digest(digest, accepted.digest) and matched is None:
                matched = accepted
        if matched is None:
            raise Unauthorized("missing or wrong API key: send it as `X-API-Key: <key>` or `Authorization: Bearer <key>`",
                               key_given=key is not None)
        if operation is Operation.REPOSITORY and matched.role is not Role.ADMIN:
            raise Forbidden(f"loading and unloading models needs a key of role admin: {matched.describe()}")
        if model is not None:
            self.check_model(matched, model)
        return matched

    @staticmethod
    def check_model(key: Key | None, model: str) -> None:
        """`Forbidden` unless `key` (None: no key was needed) may use `model`."""
        if key is not None and not key.may_use(model):
            raise Forbidden(f"model {model!r} is outside this key's scope: {key.describe()}")
