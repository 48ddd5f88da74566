"""The hot routes: `RequestRoute`, whose endpoint takes the Request and returns a Response, and `DirectRoutes`,
the innermost middleware that answers those routes by calling their endpoints directly.

FastAPI still documents such a route (OpenAPI from the decorator's `response_model`, `responses` and
`openapi_extra`), but at request time the endpoint is called with no dependency solving, parameter parsing or
response validation, which took about a third of the event loop's time per `/predict` under load. The endpoint
parses its own parameters and makes its own checks, the API key included.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send


class RequestRoute(APIRoute):
    """An APIRoute whose endpoint is `async def endpoint(request: Request) -> Response`."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        return self.endpoint


ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]


class DirectRoutes:
    """Pure ASGI middleware, the innermost: a request for one of `routes` is answered by calling the route's
    endpoint directly, past FastAPI's exception middleware, exit stack and router. An exception the endpoint
    raises is answered by the app's handler for its class, as FastAPI would; one with no handler propagates.
    Every other request goes on to FastAPI.

    Those layers and the router cost the small bundled models 10-30% of their requests/s on one CPU (side by
    side, docs/benchmarks.md), about what the whole service adds over a bare `session.run` per request."""

    def __init__(self, app: ASGIApp, routes: Sequence[RequestRoute],
                 exception_handlers: Mapping[Any, ExceptionHandler]) -> None:
        self.app = app
        self.routes = routes
        self.exception_handlers = exception_handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for route in self.routes:
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    scope.update(child_scope)
                    await self._answer(route, scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _answer(self, route: RequestRoute, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            response = await route.endpoint(request)
        except Exception as exc:
            handler = self._handler(exc)
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)

    def _handler(self, exc: Exception) -> ExceptionHandler | None:
        for cls in type(exc).__mro__:
            if cls in self.exception_handlers:
                return self.exception_handlers[cls]
        return None
