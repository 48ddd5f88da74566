"""schemathesis against the live OpenAPI schema of a real server: every route and content type, no 5xx, no
dropped connection, every error the service's JSON body, and the server healthy afterwards.

In `make test` a short run (FUZZ_MAX_EXAMPLES=6 examples per operation and phase, at least
FUZZ_MIN_REQUESTS=300 requests); `scripts/fuzz_long.sh` runs it with thousands.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.serving.support import ServerProcess, scrape

from .conftest import assert_healthy, env_number, write_report
from .schemathesis_run import run_schemathesis


def _request_counts(client: httpx.Client) -> dict[frozenset[tuple[str, str]], float]:
    """modelserver_requests_total by label set."""
    return {labels: v for (name, labels), v in scrape(client).items() if name == "modelserver_requests_total"}


def test_schemathesis_finds_no_server_error(fuzz_server: ServerProcess, tmp_path: Path) -> None:
    max_examples = int(env_number("FUZZ_MAX_EXAMPLES", 6))
    min_requests = int(env_number("FUZZ_MIN_REQUESTS", 300))
    with fuzz_server.client() as client:
        before = _request_counts(client)
    result = run_schemathesis(
        fuzz_server.url, tmp_path, max_examples, workers=int(env_number("FUZZ_WORKERS", 1))
    )
    write_report("schemathesis", result.figures())
    summary = f"{result.figures()}\n--- schemathesis ---\n{result.output[-6000:]}"
    assert result.requests >= min_requests, summary
    assert result.server_errors == 0, summary
    assert result.no_response == 0, summary
    assert not result.errors, f"{result.errors[:5]}\n{summary}"
    assert not result.failures, "\n".join(result.failures[:10]) + f"\n{summary}"
    assert result.exit_code == 0, summary
    # Every operation of the schema was exercised, and /predict with each of its kinds of body.
    assert len(result.by_operation) >= 17, result.by_operation
    media = " ".join(result.media_types)
    for kind in ("application/json", "multipart/form-data", "image/", "application/octet-stream"):
        assert kind in media, result.media_types
    with fuzz_server.client() as client:
        counts = {labels: v - before.get(labels, 0.0) for labels, v in _request_counts(client).items()}
    server_errors = {
        tuple(sorted(labels)): v for labels, v in counts.items() if v and dict(labels)["status"] >= "500"
    }
    assert sum(counts.values()) >= result.requests, counts
    assert not server_errors, f"the server counted 5xx answers: {server_errors}\n{fuzz_server.log()[-5000:]}"
    assert_healthy(fuzz_server)
