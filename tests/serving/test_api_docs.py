"""The API docs in a real headless Chromium that can reach no host but 127.0.0.1 (`browser.py`): Swagger UI and
ReDoc render the API from the service's own assets, "Try it out" sends the API key, and `SERVE_API_DOCS=false`
turns all of it off."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from .browser import Browser, chromium_or_skip
from .conftest import StartServer
from .support import ModelUnderTest, ServerProcess, assert_json_error

API_KEY = "docs-key-7d1e90"
DOCS_PATHS = ("/docs", "/redoc", "/openapi.json", "/api-docs-assets/swagger-ui-bundle.js",
              "/api-docs-assets/swagger-ui.css", "/api-docs-assets/redoc.standalone.js", "/api-docs-assets/favicon.png")
# Swagger UI's block of the POST /predict operation, and ReDoc's heading of it.
SWAGGER_PREDICT = "document.querySelector('[data-path=\"/predict\"]')?.closest('.opblock')"
REDOC_PREDICT = ("[...document.querySelectorAll('.http-verb.post')]"
                 ".some(verb => verb.nextElementSibling?.textContent === '/predict')")
# Every URL the page's elements point at: stylesheets, favicon, scripts, images.
PAGE_LINKS = "[...document.querySelectorAll('link[href], script[src], img[src]')].map(e => e.href || e.src)"
# ReDoc's footer shows Redocly's logo from their CDN, and hides it when it cannot be loaded.
REDOCLY_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


@pytest.fixture(scope="module")
def docs_server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path,
                text_model: ModelUnderTest) -> Iterator[ServerProcess]:
    """A server of the text model that needs an API key."""
    process = ServerProcess(models_dir, tmp_path_factory.mktemp("docs"),
                            {"SERVE_MODELS": text_model.name, "SERVE_API_KEY": API_KEY})
    process.start().wait_ready()
    yield process
    process.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    with Browser(chromium_or_skip(), tmp_path / "chromium") as browser:
        yield browser


def off_server(urls: list[str], server: ServerProcess) -> list[str]:
    """The URLs that are not the server's (`data:` and the page's `blob:` URLs are its own)."""
    return [url for url in urls if not url.startswith((f"{server.url}/", "data:", f"blob:{server.url}/"))]


def test_the_browser_reaches_no_other_host(browser: Browser) -> None:
    """The fence holds: a page on a CDN does not load, and its request ends at the trap."""
    assert browser.open("https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css") is not None
    assert "CONNECT cdn.jsdelivr.net:443 HTTP/1.1" in browser.trap.requests, browser.trap.requests
    assert browser.evaluate("document.querySelector('.swagger-ui') === null")


def test_swagger_ui_renders_offline(browser: Browser, docs_server: ServerProcess) -> None:
    assert browser.open(f"{docs_server.url}/docs") is None
    browser.wait_for(f"{SWAGGER_PREDICT} != null", "Swagger UI to show POST /predict")
    assert off_server(browser.requested_urls(), docs_server) == []
    assert off_server(browser.evaluate(PAGE_LINKS), docs_server) == []
    # The key's schemes are declared: Swagger UI offers to authorize.
    assert browser.evaluate("document.querySelector('button.authorize') !== null")


def test_redoc_renders_offline(browser: Browser, docs_server: ServerProcess) -> None:
    assert browser.open(f"{docs_server.url}/redoc") is None
    browser.wait_for(REDOC_PREDICT, "ReDoc to show POST /predict")
    assert set(off_server(browser.requested_urls() + browser.evaluate(PAGE_LINKS), docs_server)) <= {REDOCLY_LOGO}


@pytest.mark.parametrize("scheme", ["APIKeyHeader", "HTTPBearer", None])
def test_try_it_out_sends_the_key(browser: Browser, docs_server: ServerProcess, scheme: str | None) -> None:
    """Swagger UI's "Try it out" on POST /predict, authorized with the key through either declared scheme,
    gets the prediction; not authorized, it gets the service's 401."""
    assert browser.open(f"{docs_server.url}/docs") is None
    browser.wait_for(f"{SWAGGER_PREDICT} != null", "Swagger UI to show POST /predict")
    if scheme is not None:
        # Swagger UI's own API for what its "Authorize" dialog does; null when the document lacks the scheme.
        assert browser.evaluate(f"ui.preauthorizeApiKey({scheme!r}, {API_KEY!r}) !== null")
    browser.evaluate(f"{SWAGGER_PREDICT}.querySelector('.opblock-summary-control').click()")
    browser.wait_for(f"{SWAGGER_PREDICT}.querySelector('.try-out__btn') != null", "the Try it out button")
    browser.evaluate(f"{SWAGGER_PREDICT}.querySelector('.try-out__btn').click()")
    body = json.dumps({"text": "a gripping, beautifully acted film"})
    browser.wait_for(f"{SWAGGER_PREDICT}.querySelector('textarea.body-param__text') != null", "the body editor")
    browser.evaluate(f"""(() => {{
        const editor = {SWAGGER_PREDICT}.querySelector('textarea.body-param__text');
        Object.getOwnPropertyDescriptor(HTMLTextAreaElement.prototype, 'value').set.call(editor, {body!r});
        editor.dispatchEvent(new Event('input', {{bubbles: true}}));
    }})()""")
    browser.evaluate(f"{SWAGGER_PREDICT}.querySelector('button.execute').click()")
    answer = f"{SWAGGER_PREDICT}.querySelector('.live-responses-table tr.response')"
    status = browser.wait_for(f"{answer}?.querySelector('.response-col_status').textContent", "the answer")
    text = browser.evaluate(f"{answer}.querySelector('.response-col_description').textContent")
    if scheme is None:
        assert status == "401" and '"unauthorized"' in text, text
    else:
        assert status == "200" and '"label"' in text, text


def test_docs_can_be_turned_off(docs_server: ServerProcess, start_server: StartServer, models_dir: Path,
                                text_model: ModelUnderTest) -> None:
    """With `SERVE_API_DOCS=false`, the pages, the document and the assets all answer 404; the API serves."""
    off = start_server(models_dir, SERVE_MODELS=text_model.name, SERVE_API_DOCS="false")
    with docs_server.client() as on_client, off.client() as off_client:
        for path in DOCS_PATHS:
            assert on_client.get(path).status_code == 200, path
            assert_json_error(off_client.get(path), 404)
        assert off_client.get("/health/live").status_code == 200
