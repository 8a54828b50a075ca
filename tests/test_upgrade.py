"""Frames that a client sends right behind its WebSocket handshake request, in the
same TCP segment or before the relay has accepted the socket, over raw sockets
against a real ``vso serve``."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import time
from dataclasses import dataclass

from tests.relayserver import RelayServer

READ_TIMEOUT = 5.0
# websockets' opcodes, from RFC 6455 section 5.2.
TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA


@dataclass
class Frame:
    opcode: int
    payload: bytes

    def json(self) -> dict[str, object]:
        frame: dict[str, object] = json.loads(self.payload)
        return frame

    def close_code(self) -> int:
        code: int = struct.unpack("!H", self.payload[:2])[0]
        return code


def handshake_request(
    server: RelayServer, path: str = "/chat/ws?site=demo", cookie: str | None = None
) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    cookie_line = "" if cookie is None else f"Cookie: vso_session={cookie}\r\n"
    return (
        f"GET {path} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        f"Origin: {server.base_url}\r\n"
        f"{cookie_line}"
        "\r\n"
    ).encode()


def client_frame(
    payload: bytes, opcode: int = TEXT, mask: bytes | None = None
) -> bytes:
    """Return one final client frame, masked as RFC 6455 requires of clients."""
    mask = os.urandom(4) if mask is None else mask
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    else:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return header + mask + masked


def json_frame(frame: dict[str, object], mask: bytes | None = None) -> bytes:
    return client_frame(json.dumps(frame).encode(), mask=mask)


class RawClient:
    """One TCP connection that reads the handshake response and server frames."""

    def __init__(self, server: RelayServer) -> None:
        self.socket = socket.create_connection(("127.0.0.1", server.port))
        # Without Nagle's algorithm each sendall leaves at once, in its own segment.
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.socket.settimeout(READ_TIMEOUT)
        self.buffer = b""

    def _read_more(self) -> None:
        data = self.socket.recv(65536)
        if not data:
            raise ConnectionError(
                f"the relay closed the connection, leaving {self.buffer!r} unparsed"
            )
        self.buffer += data

    def _take(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._read_more()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def response_status(self) -> int:
        """Read the handshake response's head and return its status code."""
        while b"\r\n\r\n" not in self.buffer:
            self._read_more()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        return int(head.split(b" ", 2)[1])

    def frame(self) -> Frame:
        first, second = self._take(2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._take(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._take(8))[0]
        return Frame(first & 0x0F, self._take(length))

    def frame_of_type(self, frame_type: str) -> dict[str, object]:
        """Return the first JSON text frame of ``frame_type``, skipping others."""
        while True:
            frame = self.frame()
            if frame.opcode == TEXT and frame.json().get("type") == frame_type:
                return frame.json()
            if frame.opcode == CLOSE:
                raise AssertionError(f"closed with {frame.close_code()} first")

    def close(self) -> None:
        self.socket.close()


def error_lines(server: RelayServer) -> list[str]:
    return [
        line
        for line in server.log().splitlines()
        if " ERROR " in line or "Traceback" in line
    ]


def wait_for_log(server: RelayServer, text: str) -> None:
    deadline = time.monotonic() + READ_TIMEOUT
    while text not in server.log():
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not in the log:\n{server.log()}")
        time.sleep(0.05)


def expect_closed_with(relay: RelayServer, client: RawClient, code: int) -> None:
    """Check that the first frame after the 101 closes the socket with ``code``."""
    assert client.response_status() == 101
    reply = client.frame()
    client.close()
    assert reply.opcode == CLOSE
    assert reply.close_code() == code
    wait_for_log(relay, "closed")
    assert error_lines(relay) == []


def test_upgrade_pipelined_frame_answered(relay: RelayServer) -> None:
    client = RawClient(relay)
    client.socket.sendall(handshake_request(relay) + json_frame({"type": "ping"}))
    assert client.response_status() == 101
    assert client.frame_of_type("status")["type"] == "status"
    assert client.frame_of_type("pong") == {"type": "pong"}
    client.close()
    assert error_lines(relay) == []


def test_upgrade_pipelined_hello_answered(relay: RelayServer) -> None:
    assert relay.demo_password is not None
    cookie = asyncio.run(relay.sign_in("demo", relay.demo_password))
    hello = json_frame({"type": "hello", "last_seq": {}})
    client = RawClient(relay)
    client.socket.sendall(handshake_request(relay, "/dashboard/ws", cookie) + hello)
    assert client.response_status() == 101
    assert client.frame_of_type("state")["type"] == "state"
    assert client.frame_of_type("queue")["type"] == "queue"
    client.close()
    assert error_lines(relay) == []


def test_upgrade_pipelined_frames_in_order(relay: RelayServer) -> None:
    client = RawClient(relay)
    frames = [json_frame({"type": "ping"}), json_frame({"type": "nonsense"})]
    client.socket.sendall(handshake_request(relay) + b"".join(frames))
    assert client.response_status() == 101
    assert client.frame_of_type("pong") == {"type": "pong"}
    assert client.frame_of_type("error")["code"] == "invalid_frame"
    client.close()


def test_upgrade_pipelined_ping_ponged_after_101(relay: RelayServer) -> None:
    client = RawClient(relay)
    client.socket.sendall(handshake_request(relay) + client_frame(b"early", PING))
    assert client.response_status() == 101
    assert client.frame() == Frame(PONG, b"early")
    client.close()


def test_upgrade_pipelined_close_logs_no_error(relay: RelayServer) -> None:
    client = RawClient(relay)
    goodbye = client_frame(struct.pack("!H", 1000), CLOSE)
    client.socket.sendall(
        handshake_request(relay) + json_frame({"type": "ping"}) + goodbye
    )
    # The relay echoes the close frame as soon as it parses it and sends nothing
    # after it, neither the status frame nor the pong.
    expect_closed_with(relay, client, 1000)


def test_upgrade_frame_split_before_accept(relay: RelayServer) -> None:
    # The payload leaves in a second segment. When the relay reads it apart from
    # the request, its first byte, "{", read as a frame header has reserved bits
    # set: the frame is only valid when joined to its head.
    frame = json_frame({"type": "ping"}, mask=bytes(4))
    client = RawClient(relay)
    client.socket.sendall(handshake_request(relay) + frame[:6])
    client.socket.sendall(frame[6:])
    assert client.response_status() == 101
    assert client.frame_of_type("pong") == {"type": "pong"}
    client.close()
    assert error_lines(relay) == []


def test_upgrade_large_frames_across_reads(relay: RelayServer) -> None:
    # 300 KB do not fit in one read, so the later frames reach the relay in later
    # reads, often before it has accepted the socket.
    ping = json_frame({"type": "ping", "padding": "x" * 60_000})
    client = RawClient(relay)
    client.socket.sendall(handshake_request(relay) + ping * 5)
    assert client.response_status() == 101
    pongs = [client.frame_of_type("pong") for _ in range(5)]
    client.close()
    assert pongs == [{"type": "pong"}] * 5
    assert error_lines(relay) == []


def test_upgrade_oversized_early_frame_closed_1009(relay: RelayServer) -> None:
    client = RawClient(relay)
    header = struct.pack("!BBQ", 0x80 | TEXT, 0x80 | 127, 1 << 20)
    client.socket.sendall(handshake_request(relay) + header + bytes(4) + bytes(100))
    expect_closed_with(relay, client, 1009)


def test_upgrade_unmasked_early_frame_closed_1002(relay: RelayServer) -> None:
    # RFC 6455 requires every client frame to be masked.
    unmasked = struct.pack("!BB", 0x80 | TEXT, 2) + b"{}"
    client = RawClient(relay)
    client.socket.sendall(handshake_request(relay) + unmasked)
    expect_closed_with(relay, client, 1002)


def test_upgrade_rejected_socket_drops_early_frames(relay: RelayServer) -> None:
    client = RawClient(relay)
    client.socket.sendall(
        handshake_request(relay, "/dashboard/ws") + json_frame({"type": "hello"})
    )
    assert client.response_status() == 403
    client.close()
    wait_for_log(relay, "dashboard socket rejected")
    assert error_lines(relay) == []
