"""Who is connected now, and fan-out of frames to their sockets.

``Hub`` is the interface the rest of the relay uses; ``LocalHub`` keeps the
connections of one relay process in memory. A broker-backed hub (Redis pub/sub)
can implement the same interface when several relay processes share the work.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque
from typing import Any, Protocol

from relay import protocol

logger = logging.getLogger("relay.hub")

SEND_QUEUE_FRAMES = 256


class FrameWriter(Protocol):
    """A writer of one socket's frames. ``relay.transport`` has the implementations."""

    def write_now(self, texts: list[str]) -> bool:
        """Write ``texts`` at once, or return False if that would mean waiting.

        Raises when the socket is closed.
        """
        ...

    async def write(self, texts: list[str]) -> None:
        """Write ``texts``, waiting while the client is slow to read."""
        ...

    async def close(self, code: int) -> None: ...


class Peer:
    """One open WebSocket, with a bounded queue of frames waiting to be sent.

    Frames are queued without waiting, so a slow reader never holds up a sender.
    The frames queued while one event-loop callback runs (an ``ack`` and the
    message it acknowledges, say) leave together when it ends, in one write if
    the socket can take them. Only when it cannot does a writer task wait for
    it, so an idle or fast connection costs no task.

    When the queue is full the connection is closed with 1013 and the client
    resumes later from its last sequence number. A client that stops reading
    also stops taking the close frame, so when the queue overflows the
    ``reader`` task (the socket's receive loop) is cancelled if it is waiting
    for a frame, and the connection counts as gone at once.
    """

    def __init__(
        self,
        frames: FrameWriter,
        *,
        kind: str,
        max_queued: int = SEND_QUEUE_FRAMES,
        reader: asyncio.Task[Any] | None = None,
    ) -> None:
        self.id = secrets.token_hex(4)
        self.kind = kind
        self._frames = frames
        self._max_queued = max_queued
        self._queue: deque[str | int] = deque()
        self._closing = False
        self._flush_handle: asyncio.Handle | None = None
        self._writer: asyncio.Task[None] | None = None
        self._reader = reader
        # Set by the receive loop while it waits for the client's next frame.
        self.receiving = False
        self.abandoned = False

    def send(self, frame: dict[str, Any]) -> None:
        """Queue a frame; close the connection if the client is too far behind."""
        if self._closing:
            return
        if len(self._queue) >= self._max_queued:
            logger.warning("%s %s is not reading; closing it", self.kind, self.id)
            self.close(protocol.CLOSE_TRY_AGAIN_LATER)
            self.abandoned = True
            if self._reader is not None and self.receiving:
                self._reader.cancel()
            return
        self._queue.append(protocol.encode(frame))
        self._schedule_flush()

    def close(self, code: int) -> None:
        """Close the connection after the frames already queued, unless full."""
        if self._closing:
            return
        self._closing = True
        if len(self._queue) >= self._max_queued:
            # Drop what is queued: the client resumes from its last seq anyway.
            self._queue.clear()
        self._queue.append(code)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flush_handle is not None or self._writing():
            return
        self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    def _writing(self) -> bool:
        return self._writer is not None and not self._writer.done()

    def _flush(self) -> None:
        """Write what is queued now; leave to a writer task what has to wait."""
        self._flush_handle = None
        if self._writing() or not self._queue:
            return
        texts = self._take_texts()
        try:
            if texts and self._frames.write_now(texts):
                texts = []
        except Exception as error:  # the socket is gone, and the reader sees that
            self._lost(error)
            return
        if texts or self._queue:
            self._writer = asyncio.create_task(
                self._write(texts), name=f"peer-writer-{self.id}"
            )

    def _take_texts(self) -> list[str]:
        """Take the frames at the front of the queue, up to a close code."""
        texts: list[str] = []
        while self._queue and isinstance(self._queue[0], str):
            texts.append(self._queue.popleft())  # type: ignore[arg-type]
        return texts

    async def _write(self, texts: list[str]) -> None:
        try:
            while True:
                if texts:
                    await self._frames.write(texts)
                if not self._queue:
                    return
                item = self._queue[0]
                if isinstance(item, int):
                    self._queue.clear()
                    await self._frames.close(item)
                    return
                texts = self._take_texts()
        except Exception as error:  # the socket is gone, and the reader sees that
            self._lost(error)

    def _lost(self, error: Exception) -> None:
        logger.debug("%s %s send failed: %r", self.kind, self.id, error)
        self._closing = True
        self._queue.clear()

    async def drain(self, timeout: float) -> None:
        """Wait until a requested close has been sent, at most ``timeout`` seconds."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush()
        if self._writer is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._writer), timeout)
        except (TimeoutError, asyncio.CancelledError):
            pass

    @property
    def closing(self) -> bool:
        return self._closing

    async def stop(self) -> None:
        """Stop writing; called once the connection has ended."""
        self._closing = True
        self._queue.clear()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._writer is None:
            return
        self._writer.cancel()
        try:
            await self._writer
        except asyncio.CancelledError:
            pass


class Hub(Protocol):
    """Delivery of frames to the sockets of visitors and volunteers."""

    def add_idle_visitor(self, peer: Peer) -> None: ...
    def remove_idle_visitor(self, peer: Peer) -> None: ...
    def add_visitor(self, conversation: str, peer: Peer) -> None: ...
    def remove_visitor(self, conversation: str, peer: Peer) -> bool: ...
    def visitor_connected(self, conversation: str) -> bool: ...
    def to_visitor(self, conversation: str, frame: dict[str, Any]) -> None: ...
    def close_visitor(self, conversation: str, code: int) -> None: ...
    def add_volunteer(self, volunteer: int, peer: Peer) -> None: ...
    def remove_volunteer(self, volunteer: int, peer: Peer) -> bool: ...
    def volunteer_connected(self, volunteer: int) -> bool: ...
    def to_volunteer(self, volunteer: int, frame: dict[str, Any]) -> None: ...
    def to_all_volunteers(self, frame: dict[str, Any]) -> None: ...
    def to_all_visitors(self, frame: dict[str, Any]) -> None: ...
    def close_volunteer(self, volunteer: int, code: int) -> None: ...
    def close_all(self, code: int) -> None: ...
    def connection_count(self) -> int: ...
    def connection_counts(self) -> dict[str, int]: ...


class LocalHub:
    """The connections of this relay process, in memory."""

    def __init__(self) -> None:
        self._visitors: dict[str, set[Peer]] = {}
        self._volunteers: dict[int, set[Peer]] = {}
        # Visitor sockets that have not started or resumed a conversation yet, so
        # they still hear whether volunteers are available.
        self._idle_visitors: set[Peer] = set()

    def add_idle_visitor(self, peer: Peer) -> None:
        self._idle_visitors.add(peer)

    def remove_idle_visitor(self, peer: Peer) -> None:
        self._idle_visitors.discard(peer)

    def add_visitor(self, conversation: str, peer: Peer) -> None:
        self._idle_visitors.discard(peer)
        self._visitors.setdefault(conversation, set()).add(peer)

    def remove_visitor(self, conversation: str, peer: Peer) -> bool:
        """Forget a visitor socket; return True when it was the conversation's last."""
        peers = self._visitors.get(conversation)
        if peers is None:
            return False
        peers.discard(peer)
        if peers:
            return False
        del self._visitors[conversation]
        return True

    def visitor_connected(self, conversation: str) -> bool:
        return bool(self._visitors.get(conversation))

    def to_visitor(self, conversation: str, frame: dict[str, Any]) -> None:
        for peer in self._visitors.get(conversation, ()):
            peer.send(frame)

    def close_visitor(self, conversation: str, code: int) -> None:
        for peer in self._visitors.get(conversation, ()):
            peer.close(code)

    def add_volunteer(self, volunteer: int, peer: Peer) -> None:
        self._volunteers.setdefault(volunteer, set()).add(peer)

    def remove_volunteer(self, volunteer: int, peer: Peer) -> bool:
        """Forget a volunteer socket; return True when it was their last."""
        peers = self._volunteers.get(volunteer)
        if peers is None:
            return False
        peers.discard(peer)
        if peers:
            return False
        del self._volunteers[volunteer]
        return True

    def volunteer_connected(self, volunteer: int) -> bool:
        return bool(self._volunteers.get(volunteer))

    def to_volunteer(self, volunteer: int, frame: dict[str, Any]) -> None:
        for peer in self._volunteers.get(volunteer, ()):
            peer.send(frame)

    def to_all_volunteers(self, frame: dict[str, Any]) -> None:
        for peers in self._volunteers.values():
            for peer in peers:
                peer.send(frame)

    def to_all_visitors(self, frame: dict[str, Any]) -> None:
        for peer in self._idle_visitors:
            peer.send(frame)
        for peers in self._visitors.values():
            for peer in peers:
                peer.send(frame)

    def close_volunteer(self, volunteer: int, code: int) -> None:
        for peer in list(self._volunteers.get(volunteer, ())):
            peer.close(code)

    def close_all(self, code: int) -> None:
        for peer in list(self._idle_visitors):
            peer.close(code)
        for peers in list(self._visitors.values()) + list(self._volunteers.values()):
            for peer in list(peers):
                peer.close(code)

    def connection_count(self) -> int:
        return (
            len(self._idle_visitors)
            + sum(len(p) for p in self._visitors.values())
            + sum(len(p) for p in self._volunteers.values())
        )

    def connection_counts(self) -> dict[str, int]:
        """Return the open sockets by side: ``visitor`` and ``volunteer``."""
        return {
            "visitor": len(self._idle_visitors)
            + sum(len(p) for p in self._visitors.values()),
            "volunteer": sum(len(p) for p in self._volunteers.values()),
        }
