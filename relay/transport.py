"""The receive loop shared by the visitor and volunteer WebSockets."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket
from uvicorn.protocols.websockets.websockets_sansio_impl import (
    WebSocketsSansIOProtocol,
)
from websockets.exceptions import InvalidState

from relay import metrics, protocol
from relay.hub import Peer
from relay.protocol import ProtocolError
from relay.store import StoreError

logger = logging.getLogger("relay.transport")

MAX_INVALID_FRAMES = 20
CLOSE_DRAIN_SECONDS = 5.0


# Set on a WebSocket's scope by ``ServerSendMiddleware``: the server's own
# ``send``, before any other middleware wraps it.
SERVER_SEND = "vso.server_send"


class ServerSendMiddleware:
    """Keep the ASGI server's ``send`` in each WebSocket scope for ``open_peer``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope[SERVER_SEND] = send
        await self.app(scope, receive, send)


class AsgiFrames:
    """A socket's frames sent as ASGI messages, one each: for any ASGI server."""

    def __init__(self, websocket: WebSocket) -> None:
        self._websocket = websocket

    def write_now(self, texts: list[str]) -> bool:
        return False

    async def write(self, texts: list[str]) -> None:
        # The server's ``send`` as the app received it. Starlette's
        # ``send_text`` adds two coroutines that only check the connection
        # state, which the peer keeps itself. A send on a closed socket still
        # raises, and the peer stops writing.
        for text in texts:
            await self._websocket._send({"type": "websocket.send", "text": text})

    async def close(self, code: int) -> None:
        # Through Starlette, which must know the socket is closed.
        await self._websocket.close(code)


class SansIOFrames(AsgiFrames):
    """A socket's frames written into uvicorn's websockets-sansio connection.

    Below ASGI, where one ``transport.write`` can carry several frames: the
    ``ack`` and the ``message`` that go back to a sender leave in one system
    call instead of two. Each write was a ``send()`` to the kernel, and those
    took a sixth of the relay's samples at saturation. The checks are the ones
    uvicorn's own ``send`` makes for a text frame; closing still goes through
    ASGI.
    """

    def __init__(self, websocket: WebSocket, server: WebSocketsSansIOProtocol) -> None:
        super().__init__(websocket)
        self._server = server

    def write_now(self, texts: list[str]) -> bool:
        server = self._server
        if server.disconnected or server.close_sent:
            raise ConnectionError("the WebSocket is closed")
        if not server.writable.is_set():
            return False
        try:
            for text in texts:
                server.conn.send_text(text.encode())
        except InvalidState:
            raise ConnectionError("the WebSocket is closing") from None
        server.transport.write(b"".join(server.conn.data_to_send()))
        return True

    async def write(self, texts: list[str]) -> None:
        while not self.write_now(texts):
            await self._server.writable.wait()


def frames_for(websocket: WebSocket) -> AsgiFrames:
    """Return the fastest frame writer that the socket's server allows."""
    server = getattr(websocket.scope.get(SERVER_SEND), "__self__", None)
    if isinstance(server, WebSocketsSansIOProtocol):
        return SansIOFrames(websocket, server)
    return AsgiFrames(websocket)


def open_peer(websocket: WebSocket, kind: str) -> Peer:
    """Wrap an accepted WebSocket in a ``Peer`` with its own send queue."""
    return Peer(frames_for(websocket), kind=kind, reader=asyncio.current_task())


async def receive_frames(
    websocket: WebSocket, peer: Peer, handle: Callable[[str], Awaitable[None]]
) -> None:
    """Feed each text frame to ``handle`` until the socket closes.

    A ``ProtocolError`` from ``handle`` becomes an ``error`` frame and the socket
    stays open, unless the client sent more than ``MAX_INVALID_FRAMES`` invalid
    frames, which closes it with 1008. Returns when the client disconnects, the
    relay closed the socket, or the client stopped reading what it is sent.
    """
    invalid = 0
    while True:
        peer.receiving = True
        try:
            message = await websocket.receive()
        except asyncio.CancelledError:
            # The peer gave up on a client that stopped reading; end normally.
            task = asyncio.current_task()
            if peer.abandoned and task is not None and task.uncancel() == 0:
                return
            raise
        finally:
            peer.receiving = False
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        try:
            if text is None:
                raise ProtocolError("invalid_frame", "Frames must be text, not binary.")
            await handle(text)
        except ProtocolError as error:
            metrics.ERRORS.labels(error.code).inc()
            peer.send(error.to_frame())
            if error.code == "invalid_frame":
                invalid += 1
        except StoreError as error:
            logger.error("%s %s: storage failed: %s", peer.kind, peer.id, error)
            metrics.ERRORS.labels("storage_failed").inc()
            peer.send(
                ProtocolError(
                    "storage_failed", "The relay could not save this. Please retry."
                ).to_frame()
            )
        except Exception:
            # A bug must not close the connection: send an error frame and go on.
            logger.exception("%s %s: handling a frame failed", peer.kind, peer.id)
            metrics.ERRORS.labels("internal_error").inc()
            peer.send(
                ProtocolError(
                    "internal_error", "The relay failed to handle this frame."
                ).to_frame()
            )
        if invalid > MAX_INVALID_FRAMES:
            logger.warning(
                "%s %s sent %d invalid frames; closing it", peer.kind, peer.id, invalid
            )
            peer.close(protocol.CLOSE_POLICY_VIOLATION)
        if peer.closing:
            await peer.drain(CLOSE_DRAIN_SECONDS)
            return
