"""The hot routes' contract on its own: a `RequestRoute` runs its declared dependencies, in order, before its
endpoint, and refuses when declared what it could not honour; the data plane's access check and the HTTP
statuses of its errors.

(The end-to-end tests drive these through a real server; here the mechanism is checked without one.)
"""

from __future__ import annotations

import asyncio
import pickle

import pytest
from fastapi import APIRouter, Depends, Request, Response

from app.dataplane.access import AccessPolicy, Operation
from app.errors import Forbidden, QueueFull, Unauthorized
from app.settings import Settings
from app.transport.http.errors import headers_for, status_code_for
from app.transport.http.routes.request_route import RequestRoute


def test_declared_dependencies_run_in_order_before_the_endpoint() -> None:
    calls: list[str] = []

    def first(request: Request) -> None:
        calls.append("first")

    async def second(request: Request) -> None:
        calls.append("second")

    router = APIRouter(route_class=RequestRoute)

    @router.post("/hot", dependencies=[Depends(first), Depends(second)])
    async def hot(request: Request) -> Response:
        calls.append("endpoint")
        return Response(b"")

    route = router.routes[0]
    assert isinstance(route, RequestRoute)
    request = Request({"type": "http", "method": "POST", "path": "/hot", "headers": [], "query_string": b""})
    asyncio.run(route.answer(request))
    assert calls == ["first", "second", "endpoint"]


def test_what_a_request_route_cannot_honour_is_refused_when_declared() -> None:
    router = APIRouter(route_class=RequestRoute)

    async def needs_a_parameter(limit: int) -> None: ...

    with pytest.raises(TypeError, match="runs a dependency as `dependency\\(request\\)`"):
        @router.post("/a", dependencies=[Depends(needs_a_parameter)])
        async def a(request: Request) -> Response: ...

    with pytest.raises(TypeError, match="takes only the Request"):
        @router.post("/b/{name}")
        async def b(request: Request, name: str) -> Response: ...

    with pytest.raises(TypeError, match="takes only the Request"):
        @router.post("/c")
        async def c(request: Request, limit: int = Depends(needs_a_parameter)) -> Response: ...


def test_access_policy() -> None:
    open_service = AccessPolicy(Settings(api_key=None, api_keys=None))
    open_service.check(None, Operation.MODELS)
    with pytest.raises(Forbidden):
        open_service.check("anything", Operation.REPOSITORY)
    keyed = AccessPolicy(Settings(api_key="right-key", public_health=True))
    keyed.check("right-key", Operation.MODELS)
    keyed.check(None, Operation.HEALTH)
    with pytest.raises(Unauthorized) as wrong:
        keyed.check("wrong-key", Operation.MODELS)
    assert wrong.value.key_given
    with pytest.raises(Unauthorized) as missing:
        keyed.check(None, Operation.REPOSITORY)
    assert not missing.value.key_given


def test_errors_map_to_http_and_travel_between_processes() -> None:
    refusal = pickle.loads(pickle.dumps(QueueFull("the queue is full", retry_after=3)))
    assert isinstance(refusal, QueueFull) and refusal.message == "the queue is full"
    assert status_code_for(refusal) == 503 and headers_for(refusal) == {"Retry-After": "3"}
    assert status_code_for(Unauthorized("no key", key_given=False)) == 401
