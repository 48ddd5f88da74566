"""`RequestRoute`: a FastAPI route class for hot paths, whose endpoint takes the Request and returns a Response.

FastAPI still documents such a route (OpenAPI from the decorator's `response_model`, `responses` and
`openapi_extra`), but at request time it calls the endpoint directly: no dependency solving, parameter
parsing or response validation, which took about a third of the event loop's time per `/predict` under
load. The endpoint parses its own parameters and makes its own checks, the API key included.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request, Response
from fastapi.routing import APIRoute


class RequestRoute(APIRoute):
    """An APIRoute whose endpoint is `async def endpoint(request: Request) -> Response`."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        return self.endpoint
