"""How busy this server process's intake is: control state that the HTTP transport writes as requests come in
(app.transport.http.middleware) and the batching reads to choose where a batch runs (app.models.intake). Metrics
observe it (app.observability.metrics); nothing reads a metric back to decide."""

from __future__ import annotations


class IntakeLoad:
    """The requests this process is handling, and how long the latest one waited unread before the server read
    it (app.transport.http.arrival). Written on the event loop only."""

    __slots__ = ("in_flight", "read_delay_s")

    def __init__(self) -> None:
        self.in_flight = 0
        self.read_delay_s = 0.0
