"""A text frame that is not UTF-8 closes the socket with 1007 and logs no error,
whether it arrives right behind the handshake or later, over raw sockets
against a real ``vso serve``."""

from __future__ import annotations

from tests.relayserver import RelayServer
from tests.test_upgrade import (
    CLOSE,
    RawClient,
    client_frame,
    error_lines,
    handshake_request,
    json_frame,
    wait_for_log,
)

# RFC 6455 section 7.4.1: data inconsistent with the message type.
INVALID_DATA = 1007
NOT_UTF8 = b'{"type": "ping", "x": "\xff\xfe"}'


def expect_1007(relay: RelayServer, client: RawClient) -> None:
    reply = client.frame()
    while reply.opcode != CLOSE:
        reply = client.frame()
    client.close()
    assert reply.close_code() == INVALID_DATA
    wait_for_log(relay, "closed")


def test_invalid_text_pipelined_closed_1007(relay: RelayServer) -> None:
    client = RawClient(relay)
    client.socket.sendall(handshake_request(relay) + client_frame(NOT_UTF8))
    assert client.response_status() == 101
    expect_1007(relay, client)
    assert error_lines(relay) == []


def test_invalid_text_after_pong_closed_1007(relay: RelayServer) -> None:
    client = RawClient(relay)
    client.socket.sendall(handshake_request(relay) + json_frame({"type": "ping"}))
    assert client.response_status() == 101
    assert client.frame_of_type("pong") == {"type": "pong"}
    client.socket.sendall(client_frame(NOT_UTF8))
    expect_1007(relay, client)
    assert error_lines(relay) == []


def test_invalid_text_split_frames_closed_1007(relay: RelayServer) -> None:
    # A two-byte character cut between a text frame and its continuation is
    # valid once joined; the message after it is not.
    first = bytes([0x01, 0x80 | 1]) + bytes(4) + b"\xc3"
    last = bytes([0x80, 0x80 | 1]) + bytes(4) + b"\xa9"
    client = RawClient(relay)
    client.socket.sendall(handshake_request(relay) + first + last)
    assert client.response_status() == 101
    assert client.frame_of_type("error")["code"] == "invalid_frame"
    client.socket.sendall(client_frame(NOT_UTF8))
    expect_1007(relay, client)
    assert error_lines(relay) == []
