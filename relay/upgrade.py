"""uvicorn's protocol classes for ``vso serve``, with frames sent right behind a
WebSocket handshake request kept and processed once the handshake completes.

RFC 6455 (section 4.1) requires a client to wait for the 101 response before it sends
anything more, but a buggy or hostile client may send its first frames in the same
TCP segment as the upgrade request. Reading them once the handshake is done loses
nothing. uvicorn 0.55 mishandles them in two ways:

- Its HTTP protocol rebuilds the request from the parsed headers and gives only that
  to the WebSocket protocol, so the bytes after the request in the same read are
  dropped without a trace.
- If the rest of such a frame arrives in a later read, before the application has
  accepted the socket, websockets' ``ServerProtocol`` parses it while still in the
  ``CONNECTING`` state. The middle of a frame is rarely a valid frame header, so the
  parser usually fails, but in that state it sends no close frame, and uvicorn's
  ``handle_parser_exception`` then raises ``AssertionError`` inside
  ``data_received``. The event loop logs that at ERROR with a traceback, so any
  client can add ERROR lines to the log.

uvicorn also logs a text message that is not valid UTF-8 at ERROR with a traceback
before it closes the socket with 1007, so ``WebSocketProtocol`` checks the text
first and closes the socket itself, logging one INFO line.

``HttpProtocol`` hands the pipelined bytes on. ``WebSocketProtocol`` keeps them and
stops reading until the application has accepted the socket, then parses them once
the 101 response has been written. Early frames are then handled like any others:
the application receives them, a ping gets its pong, and an invalid or oversized
frame closes the socket with 1002 or 1009.

NOTE: written against uvicorn 0.55 and websockets 17. Both classes use attributes
of uvicorn's private protocol classes, so ``pyproject.toml`` pins uvicorn to 0.55.
Remove them when uvicorn hands on the bytes after an upgrade request and buffers
frames until the handshake completes, which ``tests/test_upgrade.py`` shows when run
with uvicorn's own classes.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import (
    WebSocketsSansIOProtocol,
)
from websockets.frames import CloseCode
from websockets.http11 import Request

logger = logging.getLogger("relay.upgrade")


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
        if isinstance(websocket, WebSocketProtocol):
            websocket.keep_early_data(pipelined)
        elif isinstance(websocket, asyncio.Protocol):
            websocket.data_received(pipelined)


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol, parsing no frame before the 101 is sent.

    Reading pauses from the handshake request until the 101 response is written,
    so the only bytes kept meanwhile are those that arrived with the request.
    """

    _early_data = b""

    def keep_early_data(self, data: bytes) -> None:
        """Keep bytes that followed the handshake request, to parse after the 101."""
        self._early_data += data

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        # Without setting read_paused, because uvicorn's receive() would resume
        # reading as soon as the application had taken the connect event.
        if not self.transport.is_closing():
            self.transport.pause_reading()

    def start_keepalive(self) -> None:
        # uvicorn calls this once, right after it has written the 101 response,
        # which is the first moment frames may be parsed. A socket the
        # application rejects never gets here, and its early data is dropped.
        super().start_keepalive()
        early_data, self._early_data = self._early_data, b""
        if early_data:
            self.data_received(early_data)
        # When the early data queued frames for the application, uvicorn paused
        # reading itself and resumes it once the application has taken them.
        if not self.read_paused and not self.transport.is_closing():
            self.transport.resume_reading()

    def send_receive_event_to_app(self) -> None:
        # uvicorn logs a text message that is not UTF-8 at ERROR with a
        # traceback, so any client could fill the log. It is rejected here first.
        if self.curr_msg_data_type == "text" and not self.close_sent:
            try:
                b"".join(self.frames).decode()
            except UnicodeDecodeError as error:
                self.frames = []
                logger.info("WebSocket text message rejected: %s", error.reason)
                self.conn.send_close(CloseCode.INVALID_DATA)
                self.handle_parser_exception()
                return
        super().send_receive_event_to_app()
