"""The API docs: `/openapi.json`, Swagger UI at `/docs` and ReDoc at `/redoc`, all served by the service itself.

The pages load Swagger UI's and ReDoc's JavaScript, CSS and favicon from `ASSETS_URL`, out of the files that
the `fastapi-offline` package ships, so they render where no CDN can be reached. With API keys configured, the
OpenAPI document declares them (`X-API-Key` or a bearer token) on every operation that needs one under the
settings, so "Authorize" and "Try it out" send the key. `SERVE_API_DOCS=false` leaves all of it out: every one
of these paths answers 404.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from app.dataplane.access import AccessPolicy
from app.settings import Settings
from app.transport.http.dependencies import ACCESS_OPERATIONS

OPENAPI_URL = "/openapi.json"
ASSETS_URL = "/api-docs-assets"

# Either scheme is accepted (app.dataplane.access.given_key): an operation's `security` lists them as
# alternatives.
SECURITY_SCHEMES = {
    "APIKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "HTTPBearer": {"type": "http", "scheme": "bearer"},
}
SECURITY = [{name: []} for name in SECURITY_SCHEMES]
UNAUTHORIZED = {"description": "missing or wrong API key"}


def needs_key(route: APIRoute, access: AccessPolicy, settings: Settings) -> bool:
    """Whether a request to `route` must carry an API key under `settings`: one of its declared access
    dependencies (`ACCESS_OPERATIONS`) is for an operation that needs one."""
    if not settings.keys_configured:
        return False
    return any(access.requires_key(ACCESS_OPERATIONS[depends.dependency]) for depends in route.dependencies
               if depends.dependency in ACCESS_OPERATIONS)


def declare_api_key(document: dict[str, Any], routers: Sequence[APIRouter], settings: Settings) -> None:
    """Add the key's security schemes to `document`, and to each operation of `routers` (included with no
    prefix) that needs a key, its `security` and its 401 answer."""
    access = AccessPolicy(settings)
    secured = [route for router in routers for route in router.routes
               if isinstance(route, APIRoute) and route.include_in_schema and needs_key(route, access, settings)]
    if not secured:
        return
    document.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
    for route in secured:
        for method in route.methods:
            operation = document["paths"][route.path_format][method.lower()]
            operation["security"] = SECURITY
            operation["responses"].setdefault("401", UNAUTHORIZED)


def install_api_docs(app: FastAPI, settings: Settings, routers: Sequence[APIRouter]) -> None:
    """Serve the OpenAPI document, the two doc pages and their assets, unless `settings.api_docs` is off.

    `app` is made with `docs_url`, `redoc_url` and `openapi_url` None, and has `routers` included (no prefix).
    """
    if not settings.api_docs:
        return
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()
            declare_api_key(document, routers, settings)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the document

    @app.get(OPENAPI_URL, include_in_schema=False)
    async def openapi_document() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=OPENAPI_URL,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=OPENAPI_URL,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )

    app.mount(ASSETS_URL, StaticFiles(packages=[("fastapi_offline", "static")]), name="api-docs-assets")
