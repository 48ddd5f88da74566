"""The hot routes: `RequestRoute`, whose endpoint takes the Request and returns a Response, and `DirectRoutes`,
the innermost middleware that answers those routes by calling them directly.

FastAPI still documents such a route (OpenAPI from the decorator's `response_model`, `responses` and
`openapi_extra`), but at request time no dependency solving, parameter parsing or response validation runs:
the endpoint parses its own parameters and builds its own answer (`response_model` documents it). Its declared
`dependencies` do run, in order, each called with the Request (the API key check is declared so). A
dependency this cannot honour (one with parameters other than the Request, sub-dependencies or a `yield`),
or an endpoint with any parameter but the Request, is refused when the route is declared.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

RequestCheck = Callable[[Request], Any]


def _takes_only_the_request(dependant: Dependant) -> bool:
    return (dependant.request_param_name is not None and not dependant.dependencies
            and not any((dependant.path_params, dependant.query_params, dependant.header_params,
                         dependant.cookie_params, dependant.body_params, dependant.websocket_param_name,
                         dependant.http_connection_param_name, dependant.response_param_name,
                         dependant.background_tasks_param_name, dependant.security_scopes_param_name)))


class RequestRoute(APIRoute):
    """An APIRoute whose endpoint is `async def endpoint(request: Request) -> Response`, and whose dependencies
    are `dependency(request: Request)`, sync or async, run before it in the order declared."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        declared = self.dependant.dependencies[:len(self.dependencies)]
        endpoint_own = replace(self.dependant, dependencies=self.dependant.dependencies[len(self.dependencies):])
        if not _takes_only_the_request(endpoint_own):
            raise TypeError(f"{self.path}: a RequestRoute's endpoint {endpoint.__name__} takes only the Request; "
                            "it reads its parameters itself (FastAPI would not parse them)")
        checks: list[tuple[RequestCheck, bool]] = []
        for dependency in declared:
            call = dependency.call
            name = getattr(call, "__name__", repr(call))
            if (not _takes_only_the_request(dependency) or inspect.isgeneratorfunction(call)
                    or inspect.isasyncgenfunction(call)):
                raise TypeError(f"{self.path}: a RequestRoute runs a dependency as `dependency(request)`; {name} "
                                "needs more (parameters, sub-dependencies or a yield): declare the route as a "
                                "plain APIRoute, or make the dependency take only the Request")
            assert call is not None  # a declared dependency has its callable
            checks.append((call, inspect.iscoroutinefunction(call)))
        self.checks = tuple(checks)

    async def answer(self, request: Request) -> Response:
        """Run the declared dependencies, then the endpoint."""
        for check, is_async in self.checks:
            if is_async:
                await check(request)
            else:
                check(request)
        response: Response = await self.endpoint(request)
        return response

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        return self.answer


ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]


class DirectRoutes:
    """Pure ASGI middleware, the innermost: a request for one of `routes` is answered by the route itself
    (`RequestRoute.answer`), past FastAPI's exception middleware, exit stack and router. An exception it
    raises is answered by the app's handler for its class, as FastAPI would; one with no handler propagates.
    Every other request goes on to FastAPI.

    Those layers and the router cost the small bundled models a share of their requests/s on one CPU
    (docs/benchmarks.md)."""

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
            response = await route.answer(request)
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
