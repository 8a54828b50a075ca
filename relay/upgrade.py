"""uvicorn's protocol classes for ``vso serve``, with frames sent right behind a
WebSocket handshake request kept and processed once the handshake completes.

A client may send its first frames in the same TCP segment as the upgrade request,
without waiting for the 101 response (RFC 6455 allows the server to read them once
the handshake is done). uvicorn 0.55 loses them in two ways:

- Its HTTP protocol rebuilds the request from the parsed headers and gives only that
  to the WebSocket protocol, so the bytes after the request in the same read are
  dropped without a trace.
- If the rest of such a frame arrives in a later read, before the application has
  accepted the socket, websockets' ``ServerProtocol`` parses it while still in the
  ``CONNECTING`` state. The middle of a frame is not a valid frame, so the parser
  fails, but in that state it sends no close frame, and uvicorn's
  ``handle_parser_exception`` then raises ``AssertionError`` inside
  ``data_received``. The event loop logs that at ERROR with a traceback, so any
  client can add ERROR lines to the log.

``HttpProtocol`` hands the pipelined bytes on, and ``WebSocketProtocol`` buffers
whatever arrives before the application accepts the socket and parses it only after
the 101 response has been written. Early frames are then handled like any others:
the application receives them, a ping gets its pong, and an invalid or oversized
frame closes the socket with 1002 or 1009.

NOTE: written against uvicorn 0.55 and websockets 17. Both classes use attributes
of uvicorn's private protocol classes, so ``pyproject.toml`` holds uvicorn to 0.55.
Remove them when uvicorn hands on the bytes after an upgrade request and buffers
frames until the handshake completes, which ``tests/test_upgrade.py`` shows when run
with uvicorn's own classes.
"""

from __future__ import annotations

import asyncio
import sys

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import (
    WebSocketsSansIOProtocol,
)
from websockets.protocol import State


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, handing pipelined bytes to the WebSocket."""

    _received = b""

    def data_received(self, data: bytes) -> None:
        # Kept for handle_websocket_upgrade, which gets no access to the data.
        self._received = data
        try:
            super().data_received(data)
        finally:
            self._received = b""

    def handle_websocket_upgrade(self) -> None:
        # uvicorn calls this while handling httptools' HttpParserUpgrade, whose
        # argument is the offset in the current read where the request ended.
        upgrade = sys.exc_info()[1]
        pipelined = b""
        if isinstance(upgrade, httptools.HttpParserUpgrade):
            pipelined = self._received[upgrade.args[0] :]
        super().handle_websocket_upgrade()
        # A handshake request that websockets rejects closes the transport; the
        # bytes behind it have nothing to go to.
        if not pipelined or self.transport.is_closing():
            return
        websocket = self.transport.get_protocol()
        if isinstance(websocket, asyncio.Protocol):
            websocket.data_received(pipelined)


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol, buffering frames until the 101 is sent.

    Reading pauses as soon as bytes are buffered, so the buffer never grows past
    what one read delivered.
    """

    _early_data = b""

    def data_received(self, data: bytes) -> None:
        if self.conn.state is State.CONNECTING and self.handshake_initiated:
            self._early_data += data
            if not self.read_paused:
                self.read_paused = True
                self.transport.pause_reading()
            return
        super().data_received(data)

    def start_keepalive(self) -> None:
        # uvicorn calls this once, right after it has written the 101 response,
        # which is the first moment frames may be parsed. A socket the
        # application rejects never gets here, and its early data is dropped.
        super().start_keepalive()
        early_data, self._early_data = self._early_data, b""
        if not early_data:
            return
        super().data_received(early_data)
        # uvicorn resumes reading once the application has taken every queued
        # event. When the early data queued none, nothing else would resume it.
        if self.read_paused and self.queue.empty():
            self.read_paused = False
            self.transport.resume_reading()
