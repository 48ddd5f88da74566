"""Headless Chromium for the tests, driven over the DevTools protocol and fenced off from every host but
127.0.0.1.

Two fences: Chromium's host resolver answers NOTFOUND for every name but 127.0.0.1, and every request that
is not to a loopback address goes to its proxy, `Trap`: a loopback listener that records what was asked and
answers nothing. A page can therefore only render from what the server under test gives it.
"""

from __future__ import annotations

import json
import os
import shutil
import socketserver
import subprocess
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

CHROMIUM = shutil.which("chromium")


def chromium_or_skip() -> str:
    """The path of Debian's `chromium`; skips the test when it is missing (fails under CI=true)."""
    if CHROMIUM is not None:
        return CHROMIUM
    reason = ("chromium is not installed: `make test` installs it (Debian's `chromium` package); "
              "scripts/install-check-tools.sh does it when run as root")
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


class Trap:
    """A proxy on a loopback port that answers nothing: it records the first line of each request it gets
    (`CONNECT host:443 HTTP/1.1`, `GET http://host/path HTTP/1.1`) and closes the connection."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        requests = self.requests

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.settimeout(5)
                try:
                    head = self.request.recv(4096)
                except OSError:
                    head = b""
                requests.append(head.split(b"\r\n", 1)[0].decode("latin-1"))

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="outside-trap", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class Browser:
    """One headless Chromium tab behind a `Trap`, for `with Browser(workdir) as browser: ...`.

    `open` a page, `wait_for` a JavaScript condition, `evaluate` JavaScript; `requested_urls` lists every
    request the page has made (from the DevTools `Network` events), the blocked ones included.
    """

    def __init__(self, chromium: str, workdir: Path, timeout: float = 30.0) -> None:
        self.chromium = chromium
        self.workdir = workdir
        self.timeout = timeout
        self.trap = Trap()
        self._process: subprocess.Popen[bytes] | None = None
        self._socket: ClientConnection | None = None
        self._closing = ExitStack()
        self._last_id = 0
        self._events: list[dict[str, Any]] = []

    def __enter__(self) -> Self:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        profile = self.workdir / "profile"
        profile.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / "chromium.log", "ab") as log:
            self._process = subprocess.Popen([
                self.chromium, "--headless", "--disable-gpu", "--no-first-run", "--window-size=1280,900",
                "--no-sandbox",  # the tests run as root, where Chromium's sandbox cannot start
                f"--user-data-dir={profile}", "--remote-debugging-port=0",
                f"--proxy-server=http://127.0.0.1:{self.trap.port}",
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                "about:blank",
            ], stdout=log, stderr=subprocess.STDOUT)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while not port_file.exists() or not port_file.read_text().strip():
            if time.monotonic() > deadline or self._process.poll() is not None:
                pytest.fail(f"chromium did not start\n{(self.workdir / 'chromium.log').read_text()[-5000:]}")
            time.sleep(0.05)
        port = port_file.read_text().split()[0]
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        (tab,) = [target for target in targets if target["type"] == "page"]
        self._socket = self._closing.enter_context(
            connect(tab["webSocketDebuggerUrl"], max_size=None, open_timeout=10))
        self.call("Network.enable")
        self.call("Page.enable")

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._closing.close()
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self.trap.close()

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result; the events that arrive meanwhile are kept."""
        assert self._socket is not None, "use the Browser in a `with` block"
        self._last_id += 1
        self._socket.send(json.dumps({"id": self._last_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._socket.recv(timeout=self.timeout))
            if message.get("id") == self._last_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message["result"]
                return result
            self._events.append(message)

    def open(self, url: str) -> str | None:
        """Navigate the tab to `url`; the network error when the page could not be loaded, else None."""
        error: str | None = self.call("Page.navigate", url=url).get("errorText")
        return error

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited); a thrown error fails."""
        answer = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in answer:
            raise AssertionError(f"{expression}\nthrew {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def wait_for(self, expression: str, what: str) -> Any:
        """Evaluate `expression` until its value is truthy and return it; fail after the timeout."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            found = self.evaluate(expression)
            if found:
                return found
            time.sleep(0.2)
        pytest.fail(f"timed out after {self.timeout:.0f} s waiting for {what}; the page requested "
                    f"{self.requested_urls()}")

    def requested_urls(self) -> list[str]:
        """Every URL the page has requested so far, in order."""
        self.evaluate("0")  # takes in the events sent before it
        return [event["params"]["request"]["url"] for event in self._events
                if event.get("method") == "Network.requestWillBeSent"]
