"""Schemathesis checks of this service, loaded by `SCHEMATHESIS_HOOKS=tests.fuzz.schemathesis_hooks`."""

from __future__ import annotations

import json
import re
from typing import Any

import schemathesis

_INTERNALS = re.compile(r"Traceback|File \"|\.py\b|site-packages|line \d+, in ")


@schemathesis.check
def error_is_service_json(ctx: Any, response: Any, case: Any) -> None:
    """Every 4xx and 5xx answer is the service's JSON error body, `{"error": ..., "code": ...}`, showing no
    internals (stack traces, source files)."""
    if response.status_code < 400:
        return
    try:
        body = json.loads(response.content)
    except ValueError:
        raise AssertionError(
            f"{response.status_code} answer is not JSON: {response.content[:200]!r}"
        ) from None
    if not (isinstance(body, dict) and set(body) == {"error", "code"} and body["error"] and body["code"]):
        raise AssertionError(f"{response.status_code} answer is not the service's error body: {body}")
    if _INTERNALS.search(body["error"]):
        raise AssertionError(f"{response.status_code} answer shows internals: {body['error']}")
    return


DEADLINE_HEADER = "X-Request-Timeout"
MET_DEADLINE_MS = 60_000


@schemathesis.hook
def before_call(ctx: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """A generated deadline of a few milliseconds is rightly answered 503 (`deadline_exceeded`, which counts as
    a server error here): a valid deadline is lengthened so that it can be met. Invalid ones (not a positive
    number: a 422) are sent as generated."""
    headers = case.headers or {}
    for name, value in headers.items():
        if name.lower() != DEADLINE_HEADER.lower():
            continue
        try:
            milliseconds = float(value)
        except (TypeError, ValueError):
            return
        if 0 < milliseconds < MET_DEADLINE_MS:
            headers[name] = str(MET_DEADLINE_MS)
        return
