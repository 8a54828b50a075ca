"""How a socket's frames reach the wire, under a real uvicorn on 127.0.0.1.

``vso serve`` runs uvicorn's websockets-sansio transport, where the relay
writes several frames in one system call. Any other ASGI WebSocket server gets
the frames one ASGI message at a time. Both must deliver every frame in order.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import struct
from base64 import b64encode
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect

from relay.transport import (
    SansIOFrames,
    ServerSendMiddleware,
    frames_for,
    open_peer,
    receive_frames,
)
from tests.relayserver import free_port

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def echo_frames(websocket: WebSocket) -> None:
    """Send the name of the socket's writer, then N frames for each ``burst N``."""
    await websocket.accept()
    await websocket.send_text(type(frames_for(websocket)).__name__)
    peer = open_peer(websocket, "test")

    async def handle(text: str) -> None:
        command, _, count = text.partition(" ")
        if command == "burst":
            for number in range(int(count)):
                peer.send({"n": number})
        elif command == "close":
            peer.close(4000)

    try:
        await receive_frames(websocket, peer, handle)
    finally:
        await peer.stop()


APP = Starlette(
    routes=[WebSocketRoute("/ws", echo_frames)],
    middleware=[Middleware(ServerSendMiddleware)],
)


@asynccontextmanager
async def server(ws: str) -> AsyncIterator[int]:
    """Serve ``APP`` with the given uvicorn WebSocket transport; yield the port."""
    port = free_port()
    config = uvicorn.Config(
        APP, host="127.0.0.1", port=port, ws=ws, lifespan="off", log_level="warning"
    )
    instance = uvicorn.Server(config)
    task = asyncio.create_task(instance.serve())
    for _ in range(200):
        if instance.started:
            break
        await asyncio.sleep(0.02)
    assert instance.started, "uvicorn did not start"
    try:
        yield port
    finally:
        instance.should_exit = True
        await asyncio.wait_for(task, 10)


@pytest.mark.parametrize(
    ("ws", "writer"),
    [("websockets-sansio", "SansIOFrames"), ("websockets", "AsgiFrames")],
)
async def test_frames_arrive_in_order(ws: str, writer: str) -> None:
    async with server(ws) as port, connect(f"ws://127.0.0.1:{port}/ws") as client:
        assert await client.recv() == writer
        for burst in (1, 2, 50):
            await client.send(f"burst {burst}")
            received = [json.loads(await client.recv()) for _ in range(burst)]
            assert received == [{"n": number} for number in range(burst)]
        await client.send("close")
        await client.wait_closed()
        assert client.close_code == 4000


def _text_frames(data: bytes) -> list[str]:
    """Split unmasked server frames of under 126 bytes each."""
    frames = []
    while data:
        assert data[0] == 0x81, "a final text frame"
        length = data[1]
        assert length < 126
        frames.append(data[2 : 2 + length].decode())
        data = data[2 + length :]
    return frames


def _masked(text: str) -> bytes:
    payload = text.encode()
    mask = os.urandom(4)
    body = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + body


async def test_queued_frames_share_one_write() -> None:
    """An ack and its message, queued at once, reach the client in one segment."""
    async with server("websockets-sansio") as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = b64encode(os.urandom(16)).decode()
        writer.write(
            (
                "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        await reader.readuntil(b"\r\n\r\n")
        first = _text_frames(await reader.read(65536))
        assert first == [SansIOFrames.__name__]
        writer.write(_masked("burst 3"))
        # One read takes what one write sent. Sent one frame at a time, the
        # three would come as three segments, and a read returns after the
        # first when the others are not there yet.
        chunk = await asyncio.wait_for(reader.read(65536), 5)
        assert _text_frames(chunk) == ['{"n":0}', '{"n":1}', '{"n":2}']
        writer.close()
        await writer.wait_closed()


async def test_vanished_client_logs_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Frames for a client that is gone are dropped without an error."""
    async with server("websockets-sansio") as port:
        client = await connect(f"ws://127.0.0.1:{port}/ws")
        assert await client.recv() == SansIOFrames.__name__
        with caplog.at_level(logging.DEBUG):
            await client.send("burst 300")
            client.transport.abort()
            await asyncio.sleep(0.2)
        assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
        # The server still serves a new client.
        async with connect(f"ws://127.0.0.1:{port}/ws") as other:
            assert await other.recv() == SansIOFrames.__name__
            await other.send("burst 2")
            assert [await other.recv() for _ in range(2)] == ['{"n":0}', '{"n":1}']
