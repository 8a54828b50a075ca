"""The baseline: a minimal pairing relay written directly on ``websockets``.

It speaks roughly the relay's frames so the same load generator drives both:
a visitor socket (``/chat/ws``) gets ``status``, sends ``resume`` with a token and
then ``send`` frames; a volunteer socket (``/dashboard/ws``) sends ``hello`` naming
the conversation. Each ``send`` is numbered, acknowledged to its sender and
delivered to both sides, as the relay does, but nothing is stored.

Run: ``python bench/raw_relay.py PORT``; it stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import Any

from websockets.asyncio.server import ServerConnection, serve


class Pair:
    def __init__(self) -> None:
        self.visitor: ServerConnection | None = None
        self.volunteer: ServerConnection | None = None
        self.seq = 0


PAIRS: dict[str, Pair] = {}


async def _deliver(socket: ServerConnection | None, text: str) -> None:
    if socket is None:
        return
    try:
        await socket.send(text)
    except Exception:
        pass


async def handler(socket: ServerConnection) -> None:
    path = socket.request.path if socket.request else ""
    side = "visitor" if path.startswith("/chat/ws") else "volunteer"
    if side == "visitor":
        await socket.send('{"type":"status","volunteers_available":true}')
    pair: Pair | None = None
    conversation = ""
    async for text in socket:
        frame: dict[str, Any] = json.loads(text)
        kind = frame.get("type")
        if kind == "resume" or kind == "hello":
            if kind == "resume":
                # The relay finds it from the token; here the client names it.
                conversation = frame["conversation"]
            else:
                conversation = next(iter(frame["last_seq"]))
            pair = PAIRS.setdefault(conversation, Pair())
            setattr(pair, side, socket)
            if kind == "resume":
                await socket.send('{"type":"assigned","volunteer":"Sam"}')
            else:
                await socket.send('{"type":"state","chats":[]}')
        elif kind == "send" and pair is not None:
            pair.seq += 1
            client_id = frame["client_id"]
            ack = json.dumps(
                {
                    "type": "ack",
                    "conversation": conversation,
                    "client_id": client_id,
                    "seq": pair.seq,
                },
                separators=(",", ":"),
            )
            message = json.dumps(
                {
                    "type": "message",
                    "conversation": conversation,
                    "seq": pair.seq,
                    "sender": side,
                    "body": frame["body"],
                    "sent_at": "",
                    "client_id": client_id,
                },
                separators=(",", ":"),
            )
            await _deliver(socket, ack)
            await _deliver(pair.visitor, message)
            await _deliver(pair.volunteer, message)
        elif kind == "ping":
            await socket.send('{"type":"pong"}')
    if pair is not None and getattr(pair, side) is socket:
        setattr(pair, side, None)
        if pair.visitor is None and pair.volunteer is None:
            PAIRS.pop(conversation, None)


async def main(port: int) -> None:
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with serve(
        handler,
        "127.0.0.1",
        port,
        compression=None,
        max_size=32 * 1024,
        ping_interval=20,
        ping_timeout=20,
        backlog=2048,
    ):
        print("ready", flush=True)
        await stop


if __name__ == "__main__":
    import logging

    import uvloop

    # Clients that vanish without a close frame are expected, so log nothing.
    logging.basicConfig(level=logging.CRITICAL)
    uvloop.run(main(int(sys.argv[1])))
