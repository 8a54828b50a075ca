"""The receive loop shared by the visitor and volunteer WebSockets."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from starlette.websockets import WebSocket

from relay import metrics, protocol
from relay.hub import Peer
from relay.protocol import ProtocolError
from relay.store import StoreError

logger = logging.getLogger("relay.transport")

MAX_INVALID_FRAMES = 20
CLOSE_DRAIN_SECONDS = 5.0


def open_peer(websocket: WebSocket, kind: str) -> Peer:
    """Wrap an accepted WebSocket in a ``Peer`` with its own send queue."""
    # Frames go to the server's ASGI ``send`` directly. Starlette's
    # ``send_text`` passes each one through two more coroutines that only
    # check the connection state (the peer keeps its own) and watch for HTTP
    # responses. Three frames leave for each relayed message, and those
    # layers took 8% of the relay's samples at saturation. A send on a closed
    # socket still raises, and the peer stops writing as before. Closing goes
    # through Starlette, which must know the socket is closed.
    asgi_send = websocket._send

    async def send_text(text: str) -> None:
        await asgi_send({"type": "websocket.send", "text": text})

    async def close(code: int) -> None:
        await websocket.close(code)

    return Peer(send_text, close, kind=kind, reader=asyncio.current_task())


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
