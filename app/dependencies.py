"""FastAPI dependencies shared by the routes."""

from __future__ import annotations

import hmac

from fastapi import Request

from app.errors import Unauthorized
from app.registry import ModelRegistry
from app.settings import Settings


async def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def require_api_key(request: Request) -> None:
    """When `SERVE_API_KEY` is set, require it as `X-API-Key: <key>` or `Authorization: Bearer <key>`."""
    expected = request.app.state.settings.api_key
    if expected is None:
        return
    given = request.headers.get("x-api-key")
    if given is None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = token if scheme.lower() == "bearer" else None
    if given is None or not hmac.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise Unauthorized("missing or wrong API key: send it as `X-API-Key: <key>` or `Authorization: Bearer <key>`")
