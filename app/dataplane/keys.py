"""The API keys the service accepts: each an id, a role, an optional model scope and the SHA-256 of the key.

Two sources, used together: `SERVE_API_KEY` / `SERVE_API_KEYS` (role `admin`, ids `env-1`, `env-2`, ...) and
the TOML file named by `SERVE_API_KEYS_FILE` (`[[key]]` tables, validated strictly by `KeysFile`). `KeyStore`
holds the current set and re-reads the file when its inode, size or modification time changes, looked at
no more than once a second, or at once on SIGHUP: the whole new set replaces the old one, or, when the file is malformed, the old
set stays and one ERROR line says why. Each server process keeps its own store, so every worker sees a change.
A plain key is never kept: only its digest, and only the id is ever logged. A key's `Limits` (its rate and
in-flight quotas) are enforced by app.dataplane.quotas.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
import tomllib
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 1.0
MAX_KEYS = 4096  # keys in the file: the quota table (app.dataplane.quotas) has a row for each


class Role(Enum):
    INFER = "infer"  # predict, v2 inference, model metadata and the model list
    ADMIN = "admin"  # also loading and unloading models


class KeyEntry(BaseModel):
    """One `[[key]]` table of the keys file; `burst` only with `rate_per_s` (see `Limits`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")]
    role: Role
    models: Annotated[list[str], Field(min_length=1)] | None = None
    rate_per_s: Annotated[float, Field(gt=0)] | None = None
    burst: Annotated[int, Field(ge=1)] | None = None
    max_in_flight: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _burst_with_rate(self) -> KeyEntry:
        if self.burst is not None and self.rate_per_s is None:
            raise ValueError("burst needs rate_per_s")
        return self

    def limits(self) -> Limits | None:
        """The key's quotas; None when it has none."""
        if self.rate_per_s is None and self.max_in_flight is None:
            return None
        burst = self.burst
        if self.rate_per_s is not None and burst is None:
            burst = max(1, math.ceil(self.rate_per_s))
        return Limits(self.rate_per_s, burst, self.max_in_flight)


class KeysFile(BaseModel):
    """The whole keys file: `[[key]]` tables with distinct ids and distinct hashes."""

    model_config = ConfigDict(extra="forbid")

    key: Annotated[list[KeyEntry], Field(max_length=MAX_KEYS)] = Field(default_factory=list)

    @model_validator(mode="after")
    def _distinct(self) -> KeysFile:
        ids: set[str] = set()
        digests: dict[str, str] = {}
        for entry in self.key:
            if entry.id in ids:
                raise ValueError(f"key id {entry.id!r} appears twice")
            ids.add(entry.id)
            digest = entry.sha256.lower()
            if digest in digests:
                raise ValueError(f"keys {digests[digest]!r} and {entry.id!r} have the same sha256")
            digests[digest] = entry.id
        return self


@dataclass(frozen=True, slots=True)
class Limits:
    """A key's quotas: `rate_per_s` requests a second on average with bursts of up to `burst` (a token bucket;
    `burst` defaults to one second's worth, `ceil(rate_per_s)`), and at most `max_in_flight` requests at once.
    None: no such limit."""

    rate_per_s: float | None
    burst: int | None
    max_in_flight: int | None


@dataclass(frozen=True)
class Key:
    """An accepted key: `models` None means every model; `limits` None means no quotas."""

    id: str
    digest: bytes
    role: Role
    models: frozenset[str] | None
    limits: Limits | None = None

    def may_use(self, model: str) -> bool:
        return self.models is None or model in self.models

    def describe(self) -> str:
        """What the key may do, for a 403: its id, role and models."""
        models = "all models" if self.models is None else "models " + ", ".join(sorted(self.models))
        return f"key {self.id!r} has role {self.role.value} for {models}"


class KeysFileError(ValueError):
    """The keys file cannot be read or is malformed; the message names the problem, never a key."""


def digest_of(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def env_keys(plain_keys: list[str]) -> tuple[Key, ...]:
    """`SERVE_API_KEY(S)`: admin keys for every model, ids `env-1`, `env-2`, ... in the order given."""
    digests = dict.fromkeys(digest_of(key) for key in plain_keys)
    return tuple(Key(f"env-{number}", digest, Role.ADMIN, None) for number, digest in enumerate(digests, 1))


def read_keys_file(path: Path) -> tuple[Key, ...]:
    """The keys of the file at `path`; `KeysFileError` naming the entry and the problem when it is malformed."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise KeysFileError(f"SERVE_API_KEYS_FILE {path}: cannot read it: {exc}") from None
    try:
        parsed = KeysFile.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(f"{_where(error['loc'], document)}: {error['msg']}" for error in exc.errors())
        raise KeysFileError(f"SERVE_API_KEYS_FILE {path}: {problems}") from None
    return tuple(Key(entry.id, bytes.fromhex(entry.sha256), entry.role,
                     frozenset(entry.models) if entry.models is not None else None, entry.limits())
                 for entry in parsed.key)


def _where(location: tuple[int | str, ...], document: dict[str, object]) -> str:
    """`[[key]] #2 (id 'photos-app') field role` for an error's location (no values: they may be hashes)."""
    if len(location) >= 2 and location[0] == "key" and isinstance(location[1], int):
        entries = document.get("key")
        entry = entries[location[1]] if isinstance(entries, list) and location[1] < len(entries) else None
        named = f" (id {entry['id']!r})" if isinstance(entry, dict) and isinstance(entry.get("id"), str) else ""
        fields = ".".join(str(part) for part in location[2:])
        return f"[[key]] #{location[1] + 1}{named}" + (f" field {fields}" if fields else "")
    return ".".join(str(part) for part in location) or "the file"


class KeyStore:
    """The keys of both sources; `current()` re-reads the file first when it changed (looked at once a second)."""

    def __init__(self, plain_keys: list[str], keys_file: Path | None) -> None:
        self._env = env_keys(plain_keys)
        self._file = keys_file
        self._signature: tuple[int, int, int] | None = None
        self._next_look = 0.0
        self._keys = self._env
        if keys_file is not None:
            self._signature = self._file_signature()
            self._keys = self._combine(read_keys_file(keys_file))  # a malformed file at start-up fails it

    @property
    def configured(self) -> bool:
        """Whether any key source is configured (the file's keys may come and go; its being named does not)."""
        return bool(self._env) or self._file is not None

    def current(self) -> tuple[Key, ...]:
        if self._file is not None and time.monotonic() >= self._next_look:
            self._next_look = time.monotonic() + POLL_INTERVAL_S
            self._reload_if_changed()
        return self._keys

    def _file_signature(self) -> tuple[int, int, int] | None:
        assert self._file is not None
        try:
            stat = os.stat(self._file)
        except OSError:
            return None
        return stat.st_ino, stat.st_size, stat.st_mtime_ns

    def reload(self) -> None:
        """Re-read the file now, changed or not (SIGHUP: app.topology.hangup)."""
        if self._file is not None:
            self._reload(self._file_signature())

    def _reload_if_changed(self) -> None:
        assert self._file is not None
        signature = self._file_signature()
        if signature != self._signature:
            self._reload(signature)

    def _reload(self, signature: tuple[int, int, int] | None) -> None:
        assert self._file is not None
        self._signature = signature
        try:
            keys = self._combine(read_keys_file(self._file))
        except KeysFileError as exc:
            logger.error("keys file not reloaded, the previous keys stay: %s", exc)
            return
        self._keys = keys
        logger.info("keys file reloaded: %d key(s): %s", len(keys), ", ".join(key.id for key in keys))

    def _combine(self, file_keys: tuple[Key, ...]) -> tuple[Key, ...]:
        ids = {key.id for key in self._env}
        clash = next((key.id for key in file_keys if key.id in ids), None)
        if clash is not None:
            raise KeysFileError(f"SERVE_API_KEYS_FILE {self._file}: id {clash!r} is taken by SERVE_API_KEY(S)")
        return self._env + file_keys
