"""uvicorn's httptools protocol with a bound on the request head, which uvicorn leaves unbounded.

uvicorn reads a request line and headers of any size with httptools (its `h11_max_incomplete_event_size`
bounds only its h11 parser): 10,000 headers, or one header of 64 MB, are buffered whole and reach the app.
`LimitedHttpToolsProtocol` answers 431 Request Header Fields Too Large instead, before the app, to a request
whose head (request line and header fields, as sent) is over `max_head_bytes` or has more than `MAX_HEADERS`
fields. A head arriving in several reads is refused as soon as it passes the limit, so at most a read or two
past it is ever held.

The same limits bound the trailer fields of a chunked request (which are dropped: ASGI has no request
trailers), with a few bytes per chunk for the chunks' framing on top.

The defaults, 64 KiB and 100 fields, are Envoy's (60 KiB, 100) rounded up, so whatever a proxy in front
forwards is accepted; Apache and gunicorn allow 100 fields too, nginx about 32 KiB of head.

It also stamps each request with the time its head arrived (`app.transport.http.arrival`), from which its
deadline counts.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from app.transport.http.arrival import RECEIVED_AT, arrival_time
from app.transport.http.middleware import REQUEST_ID_HEADER, request_id_of

DEFAULT_MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 100
# After the 431 the server keeps reading (and dropping) what the client still sends for this long, as
# nginx's lingering close does: closing at once would reset the connection and lose the answer.
LINGER_SECONDS = 5.0
# A chunked body's framing (each chunk's size line and line ends) takes a few bytes per chunk; bytes beyond
# this per chunk, plus the head limit for the trailer fields, are refused as a trailer flood.
FRAMING_BYTES_PER_CHUNK = 64


class _HeadTooLarge(Exception):
    """Raised in a parser callback to stop httptools; uvicorn then calls `send_400_response`."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's HttpToolsProtocol, refusing oversized request heads with 431 (pass it as uvicorn's `http`).

    The head limit is uvicorn's own setting for its h11 parser, `h11_max_incomplete_event_size`.
    """

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.max_head_bytes = config.h11_max_incomplete_event_size or DEFAULT_MAX_HEAD_BYTES
        self._in_head = False  # between the first byte of a request and the end of its headers
        self._read_size = 0  # of the read being parsed
        self._first_read = 0  # the size of the read in which the current head began
        self._head_reads = 0  # the sizes of the reads holding part of the current head, added up
        self._over_limit = False
        self._socket: Any = None
        self._messages = 0  # requests begun on this connection
        self._after_head: int | None = None  # non-body bytes read after the head of a chunked request
        self._chunks = 0
        self._body_bytes = 0
        self._trailer_fields = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._socket = transport.get_extra_info("socket")

    def data_received(self, data: bytes) -> None:
        if self._over_limit:
            return  # dropped: the 431 is on its way and the connection closes (see _refuse)
        self._read_size = len(data)
        if self._in_head:
            self._head_reads += len(data)
        message, body_before = self._messages, self._body_bytes
        counting = self._after_head is not None
        super().data_received(data)
        if self._over_limit:
            return
        if self._in_head and self._head_reads - self._first_read > self.max_head_bytes:
            # Still in the head, so every read after its first was all head (perhaps one field that
            # httptools buffers until it ends): too much already, without waiting for the end.
            self._refuse()
        elif counting and self._after_head is not None and self._messages == message:
            # The whole read belongs to the same chunked body: what is not body is framing and trailers.
            self._after_head += len(data) - (self._body_bytes - body_before)
            allowed = self.max_head_bytes + FRAMING_BYTES_PER_CHUNK * self._chunks
            if self._after_head > allowed:
                self._refuse()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._messages += 1
        self._after_head = None
        self._in_head = True
        self._first_read = self._head_reads = self._read_size

    def on_headers_complete(self) -> None:
        self._in_head = False
        # The reads the head spans bound its size: only a head spanning more than the limit is measured.
        too_large = self._head_reads > self.max_head_bytes and self._head_size() > self.max_head_bytes
        if too_large or len(self.headers) > MAX_HEADERS:
            self._over_limit = True
            raise _HeadTooLarge  # httptools stops; uvicorn calls send_400_response
        # The request arrived when its head did: a client slow to send it has not kept the server waiting.
        self.scope["state"][RECEIVED_AT] = arrival_time(self._socket)
        if any(name == b"transfer-encoding" for name, _ in self.headers):
            self._after_head, self._chunks, self._body_bytes, self._trailer_fields = 0, 0, 0, 0
        super().on_headers_complete()

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_head:
            super().on_header(name, value)
            return
        self._trailer_fields += 1  # a trailer field: counted, and dropped (ASGI has no request trailers)
        if self._trailer_fields > MAX_HEADERS:
            self._over_limit = True
            raise _HeadTooLarge

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def on_chunk_header(self) -> None:
        self._chunks += 1

    def on_message_complete(self) -> None:
        self._after_head = None
        super().on_message_complete()

    def _head_size(self) -> int:
        """The head's size as sent, at the least: the request target, and `name:value\\r\\n` for each field."""
        return len(self.url) + sum(len(name) + len(value) + 3 for name, value in self.headers)

    def send_400_response(self, msg: str) -> None:
        if self._over_limit:
            self._refuse()
        else:
            super().send_400_response(msg)

    def _refuse(self) -> None:
        """Answer 431, then drop whatever else comes, and close once the client has read the answer (or after
        LINGER_SECONDS). A request the app already has (its trailers were too large) ends for the app as if
        its client had left."""
        self._over_limit = True
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and cycle.scope is self.scope:
            cycle.disconnected = True
            cycle.message_event.set()
            if cycle.response_started:  # too late for a 431
                self.transport.close()
                return
        body = json.dumps({
            "error": f"the request line and headers (or trailers) exceed {self.max_head_bytes} bytes or "
                     f"{MAX_HEADERS} fields",
            "code": "request_header_fields_too_large",
        }).encode()
        # The X-Request-ID that RequestId gives every other answer: the client's, if it came before the limit.
        headers = [*self.server_state.default_headers, (REQUEST_ID_HEADER, request_id_of(self.headers))]
        head = [STATUS_LINE[431]]
        for name, value in headers:
            head += [name, b": ", value, b"\r\n"]
        head += [b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body)]
        self.transport.write(b"".join(head) + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()  # the client reads the answer and closes; eof_received then closes ours
        self.loop.call_later(LINGER_SECONDS, self.transport.close)
