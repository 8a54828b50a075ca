"""The life of a conversation: queue, accept, messages, hand-back and end.

``ChatService`` is the one place that changes conversations. Both sides' transports
call it, and it persists first, then acknowledges, then delivers through the hub.

Locks: ``_pairing_lock`` guards the queue and assignments; one lock per
conversation orders its messages, so frames leave in ``seq`` order. A task that
needs both takes the pairing lock first.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from relay import metrics, protocol
from relay.availability import AvailabilityLog
from relay.casestore import CaseStore
from relay.hub import Hub, Peer
from relay.pairing import Pairing, PairingError
from relay.protocol import ProtocolError
from relay.store import (
    Conversation,
    ConversationClosedError,
    Message,
    Site,
    Store,
    StoreError,
)

logger = logging.getLogger("relay.conversations")

EMERGENCY_NUMBER = "112"

# A visitor without a socket (the chat page with scripts off) counts as connected
# for this long after each request. Their transcript frame reloads every 3 s.
HTTP_PRESENCE_SECONDS = 10.0

SCRIPT = "script"
NOSCRIPT = "noscript"


def hash_token(token: str) -> str:
    """Return the hex SHA-256 of a conversation token, as stored."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def message_frame(message: Message, author: str | None) -> dict[str, Any]:
    """Return the ``message`` frame; ``author`` is the writing volunteer's name."""
    frame = {
        "type": "message",
        "conversation": message.conversation_id,
        "seq": message.seq,
        "sender": message.sender,
        "body": message.body,
        "sent_at": message.created_at,
        "client_id": message.client_id,
    }
    if message.sender == "volunteer" and author is not None:
        frame["author"] = author
    if message.resource is not None:
        frame["resource"] = message.resource
    return frame


class ChatObserver(Protocol):
    """What supervision hears from ``ChatService``; calls must not block."""

    def conversations_changed(self) -> None:
        """Note that the queue, an assignment, a presence or a count changed."""

    def message_stored(self, conversation_id: str, frame: dict[str, Any]) -> None:
        """Receive the ``message`` frame of a message stored just now."""

    def conversation_transferred(
        self, conversation_id: str, previous: int, volunteer: int
    ) -> None:
        """Note that a conversation moved from ``previous`` to ``volunteer``."""


@dataclass(frozen=True)
class Timeouts:
    """Grace periods, in seconds, before a dropped side counts as gone."""

    visitor: float
    volunteer: float


class ChatService:
    """Conversations between visitors and volunteers in this relay process."""

    def __init__(self, store: Store, hub: Hub, timeouts: Timeouts) -> None:
        self.store = store
        self.hub = hub
        self.timeouts = timeouts
        self.pairing = Pairing()
        self._pairing_lock = asyncio.Lock()
        self._conversation_locks: dict[str, asyncio.Lock] = {}
        self._queued_at: dict[str, str] = {}
        self._sent_positions: dict[str, int] = {}
        self._display_names: dict[int, str] = {}
        self._visitor_timers: dict[str, asyncio.Task[None]] = {}
        self._volunteer_timers: dict[int, asyncio.Task[None]] = {}
        # Volunteers whose "Available" was on when the relay stopped, until their
        # first dashboard socket returns or their grace period ends.
        self._expected: set[int] = set()
        self._any_available = False
        # Visitors without a socket: the task that marks one gone when requests stop.
        # NOTE: this presence lives in this process, like the grace timers, not in
        # the Hub; a broker-backed Hub for several processes has to share it.
        self._http_presence: dict[str, asyncio.Task[None]] = {}
        # The transport a conversation's visitor used last, "script" or "noscript".
        self._transports: dict[str, str] = {}
        self.availability = AvailabilityLog(CaseStore(store))
        # Supervisors who joined a conversation and may write to its visitor.
        self._joined: dict[str, set[int]] = {}
        self.observer: ChatObserver | None = None
        # The language each open conversation's visitor chose, for the dashboard.
        self._languages: dict[str, str] = {}

    # Start and stop

    async def restore(self) -> None:
        """Rebuild the queue and assignments from storage after a start.

        Nobody is connected yet, so every open conversation and every volunteer
        with chats gets its grace period to come back. Volunteers whose
        "Available" was on count as available during theirs, because their
        dashboards reconnect a few seconds after the start.
        """
        await self.availability.restart()
        open_conversations = await self.store.list_open_conversations()
        for conversation in open_conversations:
            self._languages[conversation.id] = conversation.language
            if conversation.status == "queued":
                self.pairing.enqueue(conversation.id)
                self._queued_at[conversation.id] = conversation.created_at
            elif conversation.volunteer_id is not None:
                volunteer = await self.store.get_volunteer(conversation.volunteer_id)
                capacity = volunteer.capacity if volunteer else 1
                self.pairing.add_volunteer(conversation.volunteer_id, capacity)
                try:
                    self.pairing.assign(conversation.volunteer_id, conversation.id)
                except PairingError:
                    # The capacity was lowered while the chat was running.
                    await self._requeue_stored([conversation.id])
                    self.pairing.requeue_front([conversation.id])
                    self._queued_at[conversation.id] = conversation.created_at
                    continue
                self._start_volunteer_timer(conversation.volunteer_id)
            self._start_visitor_timer(conversation.id)
        for volunteer in await self.store.list_available_volunteers():
            self.pairing.add_volunteer(volunteer.id, volunteer.capacity)
            self.pairing.set_available(volunteer.id, True)
            self._expected.add(volunteer.id)
            self._start_volunteer_timer(volunteer.id)
        self._any_available = self.volunteers_available()
        if open_conversations:
            logger.info("restored %d open conversations", len(open_conversations))
        if self._expected:
            logger.info(
                "expecting %d available volunteers back within %g s",
                len(self._expected),
                self.timeouts.volunteer,
            )

    async def stop(self) -> None:
        """Cancel grace timers; conversations stay open for the next start."""
        timers = (
            list(self._visitor_timers.values())
            + list(self._volunteer_timers.values())
            + list(self._http_presence.values())
        )
        for task in timers:
            task.cancel()
        await asyncio.gather(*timers, return_exceptions=True)
        await self.availability.stop()
        self._visitor_timers.clear()
        self._volunteer_timers.clear()
        self._http_presence.clear()
        self._expected.clear()

    # Visitors

    def is_open(self, conversation_id: str) -> bool:
        """Return True while a conversation waits in the queue or has a volunteer."""
        return (
            self.pairing.position(conversation_id) is not None
            or self.pairing.volunteer_of(conversation_id) is not None
        )

    def volunteers_available(self) -> bool:
        """Return True when a volunteer is switched on and connected right now.

        A volunteer inside their reconnection grace period is not counted, so
        visitors are not queued for someone who may not come back. The
        exception is the grace period that starts with the relay: a volunteer
        who was available when it stopped counts until their dashboard returns
        or the period ends.
        """
        return any(
            self.hub.volunteer_connected(volunteer) or volunteer in self._expected
            for volunteer in self.pairing.available_volunteers()
        )

    def visitor_status_frame(self) -> dict[str, Any]:
        return {"type": "status", "volunteers_available": self.volunteers_available()}

    async def start(
        self, peer: Peer, site: Site, language: str = "en"
    ) -> Conversation | None:
        """Open a conversation for a visitor socket and put it in the queue.

        Returns None, creating nothing, when no volunteer is available, and the
        socket receives ``unavailable`` at once.
        """
        async with self._pairing_lock:
            if not self.volunteers_available():
                peer.send({"type": "unavailable", "emergency": EMERGENCY_NUMBER})
                return None
            conversation, token, position = await self._create(site, SCRIPT, language)
            self.hub.add_visitor(conversation.id, peer)
            peer.send(
                {"type": "started", "conversation": conversation.id, "token": token}
            )
            peer.send({"type": "queued", "position": position})
            self._sent_positions[conversation.id] = position
            self._announce_queue()
        logger.info("conversation %s started on site %d", conversation.id, site.id)
        return conversation

    async def start_without_socket(
        self, site: Site, language: str = "en"
    ) -> tuple[Conversation, str] | None:
        """Open a conversation for a visitor without a socket (scripts off).

        Returns the conversation and its token, or None, creating nothing, when no
        volunteer is available. The request counts as the visitor's presence.
        """
        async with self._pairing_lock:
            if not self.volunteers_available():
                return None
            conversation, token, position = await self._create(site, NOSCRIPT, language)
            self._sent_positions[conversation.id] = position
            self._announce_queue()
        self._mark_http_presence(conversation.id)
        logger.info(
            "conversation %s started without scripts on site %d",
            conversation.id,
            site.id,
        )
        return conversation, token

    async def _create(
        self, site: Site, transport: str, language: str
    ) -> tuple[Conversation, str, int]:
        """Store a new queued conversation; the caller holds the pairing lock."""
        token = secrets.token_urlsafe(32)
        conversation = await self.store.create_conversation(
            secrets.token_urlsafe(12), site.id, hash_token(token), language=language
        )
        self._languages[conversation.id] = conversation.language
        position = self.pairing.enqueue(conversation.id)
        self._queued_at[conversation.id] = conversation.created_at
        self._transports[conversation.id] = transport
        return conversation, token, position

    async def resume(
        self, peer: Peer, site: Site, token: str, last_seq: int
    ) -> Conversation:
        """Re-attach a visitor socket to its conversation and send what it missed.

        Raises ``ProtocolError`` (``not_found``) for an unknown token or a token of
        another site. For an ended conversation the socket gets ``ended`` and the
        conversation is returned closed.
        """
        conversation = await self.store.get_conversation_by_token_hash(
            hash_token(token)
        )
        if conversation is None or conversation.site_id != site.id:
            raise ProtocolError("not_found", "This conversation does not exist.")
        if not conversation.is_open:
            peer.send(self._ended_frame(conversation.id, conversation.end_reason))
            return conversation
        async with self._lock(conversation.id):
            current = await self.store.get_conversation(conversation.id)
            if current is None or not current.is_open:
                reason = current.end_reason if current else "abandoned"
                peer.send(self._ended_frame(conversation.id, reason))
                return current or conversation
            position = self.pairing.position(current.id)
            if position is not None:
                peer.send({"type": "queued", "position": position})
            elif current.volunteer_id is not None:
                peer.send(
                    {
                        "type": "assigned",
                        "volunteer": await self._display_name(current.volunteer_id),
                    }
                )
            for message in await self.store.messages_after(current.id, last_seq):
                peer.send(message_frame(message, await self._author(message)))
            before = self._presence(current.id)
            self.hub.add_visitor(current.id, peer)
            self._transports[current.id] = SCRIPT
            self._cancel_visitor_timer(current.id)
            self._announce_presence(current.id, before)
        logger.info("conversation %s resumed", current.id)
        return current

    async def visitor_send(self, conversation_id: str, send: protocol.Send) -> None:
        """Store a visitor's message, acknowledge it and deliver it."""
        await self._store_and_deliver(
            conversation_id, "visitor", send, volunteer_id=None
        )

    async def visitor_end(self, conversation_id: str) -> None:
        await self.end(conversation_id, "ended", "visitor")

    async def visitor_delete(self, site: Site, token: str) -> str:
        """End if needed, then delete a conversation and its messages for good.

        The token proves the conversation is the visitor's. Raises
        ``ProtocolError`` (``not_found``) for an unknown token or one of another
        site. The volunteer who had the conversation gets ``deleted``.
        """
        conversation = await self.store.get_conversation_by_token_hash(
            hash_token(token)
        )
        if conversation is None or conversation.site_id != site.id:
            raise ProtocolError("not_found", "This conversation does not exist.")
        if conversation.is_open:
            await self.end(conversation.id, "ended", "visitor")
        if not await self.store.delete_conversation(conversation.id):
            raise ProtocolError("not_found", "This conversation does not exist.")
        if conversation.volunteer_id is not None:
            self.hub.to_volunteer(
                conversation.volunteer_id,
                {"type": "deleted", "conversation": conversation.id},
            )
        logger.info("conversation %s deleted by the visitor", conversation.id)
        return conversation.id

    async def visitor_disconnected(self, conversation_id: str, peer: Peer) -> None:
        """Forget a visitor socket; after its last one, start the grace period."""
        before = self._presence(conversation_id)
        if not self.hub.remove_visitor(conversation_id, peer):
            return
        if not self.is_open(conversation_id):
            return
        self._announce_presence(conversation_id, before)
        if not self.visitor_present(conversation_id):
            self._start_visitor_timer(conversation_id)

    async def visitor_seen(self, conversation_id: str) -> None:
        """Count a request of a visitor without a socket as their presence.

        Each reload of the transcript frame restarts the presence window; the
        volunteer hears ``visitor_status`` when the visitor comes or goes, or
        switches between the two transports.
        """
        if self.is_open(conversation_id):
            self._mark_http_presence(conversation_id)

    def visitor_present(self, conversation_id: str) -> bool:
        """Return True while the visitor has a socket or made a recent request."""
        return (
            self.hub.visitor_connected(conversation_id)
            or conversation_id in self._http_presence
        )

    def transport_of(self, conversation_id: str) -> str:
        """Return ``script`` while a socket is open, else the transport used last."""
        if self.hub.visitor_connected(conversation_id):
            return SCRIPT
        if conversation_id in self._http_presence:
            return NOSCRIPT
        return self._transports.get(conversation_id, SCRIPT)

    def language_of(self, conversation_id: str) -> str:
        """Return the language code the conversation's visitor chose."""
        return self._languages.get(conversation_id, "en")

    def _presence(self, conversation_id: str) -> tuple[bool, str]:
        return (
            self.visitor_present(conversation_id),
            self.transport_of(conversation_id),
        )

    def _announce_presence(
        self, conversation_id: str, before: tuple[bool, str]
    ) -> None:
        """Tell the volunteer when the visitor's presence or transport changed."""
        after = self._presence(conversation_id)
        self._transports[conversation_id] = after[1]
        volunteer = self.pairing.volunteer_of(conversation_id)
        if after != before:
            self._changed()
        if after != before and volunteer is not None:
            self.hub.to_volunteer(
                volunteer,
                {
                    "type": "visitor_status",
                    "conversation": conversation_id,
                    "connected": after[0],
                    "transport": after[1],
                },
            )

    def _mark_http_presence(self, conversation_id: str) -> None:
        before = self._presence(conversation_id)
        task = self._http_presence.pop(conversation_id, None)
        if task is not None:
            task.cancel()
        self._http_presence[conversation_id] = self._spawn(
            self._http_presence_ends(conversation_id),
            f"visitor-presence-{conversation_id}",
        )
        if not self.hub.visitor_connected(conversation_id):
            self._transports[conversation_id] = NOSCRIPT
        self._cancel_visitor_timer(conversation_id)
        self._announce_presence(conversation_id, before)

    async def _http_presence_ends(self, conversation_id: str) -> None:
        await asyncio.sleep(HTTP_PRESENCE_SECONDS)
        before = self._presence(conversation_id)
        if self._http_presence.get(conversation_id) is asyncio.current_task():
            del self._http_presence[conversation_id]
        if not self.is_open(conversation_id):
            return
        self._announce_presence(conversation_id, before)
        if not self.visitor_present(conversation_id):
            self._start_visitor_timer(conversation_id)

    def _forget_presence(self, conversation_id: str) -> None:
        task = self._http_presence.pop(conversation_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        self._transports.pop(conversation_id, None)

    # Volunteers

    async def volunteer_connected(
        self, volunteer_id: int, capacity: int, peer: Peer
    ) -> None:
        """Register a dashboard socket; a returning volunteer keeps their chats."""
        async with self._pairing_lock:
            self.pairing.add_volunteer(volunteer_id, capacity)
            self.hub.add_volunteer(volunteer_id, peer)
            self._expected.discard(volunteer_id)
            self._cancel_volunteer_timer(volunteer_id)
            self._announce_availability()
            await self._record_availability(volunteer_id)
        self._changed()

    async def hello(
        self, volunteer_id: int, display_name: str, peer: Peer, last_seq: dict[str, int]
    ) -> None:
        """Send a dashboard its full state and the messages it missed.

        Catch-up frames may interleave with live ones; the dashboard places
        messages by ``seq`` and ignores ones it has.
        """
        self._display_names[volunteer_id] = display_name
        chats = []
        conversations = self.pairing.conversations_of(volunteer_id)
        for conversation_id in conversations:
            conversation = await self.store.get_conversation(conversation_id)
            chats.append(
                {
                    "conversation": conversation_id,
                    "started_at": conversation.assigned_at if conversation else None,
                    "visitor_connected": self.visitor_present(conversation_id),
                    "transport": self.transport_of(conversation_id),
                    "language": self.language_of(conversation_id),
                }
            )
        peer.send(
            {
                "type": "state",
                "available": self.pairing.is_available(volunteer_id),
                "capacity": self.pairing.capacity_of(volunteer_id),
                "display_name": display_name,
                "chats": chats,
            }
        )
        peer.send(self._queue_frame())
        for conversation_id in conversations:
            seen = last_seq.get(conversation_id, 0)
            for message in await self.store.messages_after(conversation_id, seen):
                peer.send(await self._volunteer_frame(message, volunteer_id))

    async def set_availability(self, volunteer_id: int, available: bool) -> None:
        """Switch a volunteer's "Available" on or off; it survives a restart."""
        async with self._pairing_lock:
            await self.store.set_volunteer_available(volunteer_id, available)
            self.pairing.set_available(volunteer_id, available)
            self.hub.to_volunteer(
                volunteer_id, {"type": "availability", "available": available}
            )
            self._announce_availability()
            await self._record_availability(volunteer_id)
        self._changed()
        logger.info(
            "volunteer %d is %s", volunteer_id, "available" if available else "away"
        )

    async def accept(self, volunteer_id: int, conversation_id: str) -> None:
        """Give a waiting visitor to a volunteer; exactly one accept can win.

        Raises ``ProtocolError`` with ``already_taken``, ``at_capacity`` or
        ``not_available``.
        """
        async with self._pairing_lock:
            try:
                self.pairing.accept(volunteer_id, conversation_id)
            except PairingError as error:
                raise ProtocolError(
                    error.code, str(error), conversation=conversation_id
                ) from None
            try:
                stored = await self.store.assign_conversation(
                    conversation_id, volunteer_id
                )
            except StoreError:
                self.pairing.remove(conversation_id)
                self.pairing.requeue_front([conversation_id])
                raise
            if not stored:
                # Another relay process, or an end that is still being stored.
                self.pairing.remove(conversation_id)
                raise ProtocolError(
                    "already_taken",
                    "This visitor is no longer waiting.",
                    conversation=conversation_id,
                )
            metrics.observe_queue_wait(self._queued_at.pop(conversation_id, None))
            self._sent_positions.pop(conversation_id, None)
            conversation = await self.store.get_conversation(conversation_id)
            async with self._lock(conversation_id):
                self.hub.to_volunteer(
                    volunteer_id,
                    {
                        "type": "assigned",
                        "conversation": conversation_id,
                        "started_at": conversation.assigned_at
                        if conversation
                        else None,
                        "visitor_connected": self.visitor_present(conversation_id),
                        "transport": self.transport_of(conversation_id),
                        "language": self.language_of(conversation_id),
                    },
                )
                # Messages the visitor wrote while waiting.
                for message in await self.store.messages_after(conversation_id, 0):
                    frame = await self._volunteer_frame(message, volunteer_id)
                    self.hub.to_volunteer(volunteer_id, frame)
                self.hub.to_visitor(
                    conversation_id,
                    {
                        "type": "assigned",
                        "volunteer": await self._display_name(volunteer_id),
                    },
                )
            self._announce_queue()
        logger.info(
            "conversation %s accepted by volunteer %d", conversation_id, volunteer_id
        )

    async def volunteer_send(
        self,
        volunteer_id: int,
        send: protocol.Send,
        resource: dict[str, str] | None = None,
    ) -> None:
        """Store a volunteer's reply, or a resource card with its text as body."""
        conversation_id = await self._owned(
            volunteer_id, send.conversation, send.client_id
        )
        await self._store_and_deliver(
            conversation_id, "volunteer", send, volunteer_id, resource
        )

    async def volunteer_end(
        self, volunteer_id: int, conversation_id: str | None
    ) -> None:
        owned = await self._owned(volunteer_id, conversation_id, None)
        await self.end(owned, "ended", "volunteer")

    async def volunteer_block(self, volunteer_id: int, conversation_id: str) -> str:
        """End one of the volunteer's conversations as ``blocked``.

        The token stops working like that of any ended conversation; the caller
        also refuses new starts from where it came. Raises ``ProtocolError``
        like ``volunteer_end``.
        """
        owned = await self._owned(volunteer_id, conversation_id, None)
        await self.end(owned, "ended", "blocked")
        logger.info("volunteer %d blocked conversation %s", volunteer_id, owned)
        return owned

    async def volunteer_disconnected(self, volunteer_id: int, peer: Peer) -> None:
        """Forget a dashboard socket; after their last one, start the grace period."""
        if self.hub.remove_volunteer(volunteer_id, peer):
            self._start_volunteer_timer(volunteer_id)
            self._announce_availability()
            await self._record_availability(volunteer_id)
            self._changed()

    async def sign_out(self, volunteer_id: int) -> None:
        """Close the volunteer's sockets and hand their chats back at once."""
        self.hub.close_volunteer(volunteer_id, protocol.CLOSE_SIGNED_OUT)
        self._cancel_volunteer_timer(volunteer_id)
        await self.hand_back(volunteer_id)

    async def hand_back(self, volunteer_id: int) -> None:
        """Return a departed volunteer's chats to the front of the queue."""
        async with self._pairing_lock:
            self._expected.discard(volunteer_id)
            handed_back = self.pairing.release(volunteer_id)
            for conversation_id in handed_back:
                self._joined.pop(conversation_id, None)
            try:
                await self.store.set_volunteer_available(volunteer_id, False)
            except StoreError:
                logger.exception("storing volunteer %d as away failed", volunteer_id)
            self.hub.to_volunteer(
                volunteer_id, {"type": "availability", "available": False}
            )
            if handed_back:
                try:
                    await self.store.requeue_conversations(handed_back)
                except StoreError:
                    logger.exception(
                        "storing the hand-back of volunteer %d failed", volunteer_id
                    )
                for conversation_id in handed_back:
                    conversation = await self.store.get_conversation(conversation_id)
                    if conversation:
                        self._queued_at[conversation_id] = conversation.created_at
                    position = self.pairing.position(conversation_id) or 1
                    self._sent_positions[conversation_id] = position
                    self.hub.to_visitor(
                        conversation_id, {"type": "requeued", "position": position}
                    )
                    self.hub.to_volunteer(
                        volunteer_id,
                        self._ended_frame(conversation_id, "handed_back"),
                    )
                self._announce_queue()
            self._announce_availability()
            await self._record_availability(volunteer_id)
        self._changed()
        if handed_back:
            logger.info(
                "volunteer %d left; handed back %d conversations",
                volunteer_id,
                len(handed_back),
            )

    # Supervision

    def may_write(self, conversation_id: str, volunteer_id: int) -> bool:
        """Return True for the assigned volunteer and for supervisors who joined."""
        return self.pairing.volunteer_of(
            conversation_id
        ) == volunteer_id or volunteer_id in self._joined.get(conversation_id, ())

    def joined(self, conversation_id: str) -> set[int]:
        """Return the supervisors who joined a conversation."""
        return set(self._joined.get(conversation_id, ()))

    async def join(self, conversation_id: str, supervisor_id: int) -> None:
        """Let a supervisor write to the visitor of an active conversation.

        Raises ``ProtocolError`` (``not_found``) unless a volunteer has it. The
        volunteer gets ``supervisor_joined``; the visitor sees the supervisor's
        display name on their messages.
        """
        async with self._lock(conversation_id):
            volunteer = self.pairing.volunteer_of(conversation_id)
            if volunteer is None:
                raise ProtocolError(
                    "not_found",
                    "Only a conversation with a volunteer can be joined.",
                    conversation=conversation_id,
                )
            self._joined.setdefault(conversation_id, set()).add(supervisor_id)
            self.hub.to_volunteer(
                volunteer,
                {
                    "type": "supervisor_joined",
                    "conversation": conversation_id,
                    "name": await self._display_name(supervisor_id),
                },
            )
        self._changed()
        logger.info(
            "supervisor %d joined conversation %s", supervisor_id, conversation_id
        )

    async def leave(self, conversation_id: str, supervisor_id: int) -> None:
        """Stop a supervisor writing to a conversation; leaving twice is harmless."""
        async with self._lock(conversation_id):
            joined = self._joined.get(conversation_id, set())
            if supervisor_id not in joined:
                return
            joined.discard(supervisor_id)
            if not joined:
                del self._joined[conversation_id]
            volunteer = self.pairing.volunteer_of(conversation_id)
            if volunteer is not None:
                self.hub.to_volunteer(
                    volunteer,
                    {
                        "type": "supervisor_left",
                        "conversation": conversation_id,
                        "name": await self._display_name(supervisor_id),
                    },
                )
        self._changed()
        logger.info(
            "supervisor %d left conversation %s", supervisor_id, conversation_id
        )

    async def supervisor_send(self, supervisor_id: int, send: protocol.Send) -> None:
        """Store and deliver a joined supervisor's message to the visitor."""
        conversation_id = send.conversation
        if conversation_id is None or supervisor_id not in self._joined.get(
            conversation_id, ()
        ):
            raise ProtocolError(
                "forbidden",
                "Join this conversation before writing to the visitor.",
                client_id=send.client_id,
                conversation=conversation_id,
            )
        await self._store_and_deliver(conversation_id, "volunteer", send, supervisor_id)

    async def transfer(self, conversation_id: str, to_volunteer: int) -> int:
        """Move an active conversation to another connected, available volunteer.

        Pairing and the store change under the pairing and conversation locks,
        so each message goes either to the previous volunteer before the
        switch (and reaches the new one in the history) or to the new one
        after it. The previous volunteer gets ``ended`` with reason
        ``transferred``; the new one gets ``assigned`` and the history; the
        visitor gets ``assigned`` with the new display name. Returns the
        previous volunteer. Raises ``ProtocolError`` with the codes of
        ``Pairing.transfer``, or ``not_available`` when the new volunteer has
        no dashboard open.
        """
        async with self._pairing_lock, self._lock(conversation_id):
            if not self.hub.volunteer_connected(to_volunteer):
                raise ProtocolError(
                    "not_available",
                    "That volunteer has no dashboard open.",
                    conversation=conversation_id,
                )
            try:
                previous = self.pairing.transfer(conversation_id, to_volunteer)
            except PairingError as error:
                raise ProtocolError(
                    error.code, str(error), conversation=conversation_id
                ) from None
            try:
                stored = await self.store.transfer_conversation(
                    conversation_id, previous, to_volunteer
                )
            except StoreError:
                self._undo_transfer(conversation_id, previous)
                raise
            if not stored:
                self._undo_transfer(conversation_id, previous)
                raise ProtocolError(
                    "not_found",
                    "This conversation is no longer active.",
                    conversation=conversation_id,
                )
            self.hub.to_volunteer(
                previous, self._ended_frame(conversation_id, "transferred")
            )
            conversation = await self.store.get_conversation(conversation_id)
            self.hub.to_volunteer(
                to_volunteer,
                {
                    "type": "assigned",
                    "conversation": conversation_id,
                    "started_at": conversation.assigned_at if conversation else None,
                    "visitor_connected": self.visitor_present(conversation_id),
                    "transport": self.transport_of(conversation_id),
                    "transferred": True,
                },
            )
            for message in await self.store.messages_after(conversation_id, 0):
                frame = await self._volunteer_frame(message, to_volunteer)
                self.hub.to_volunteer(to_volunteer, frame)
            if self.observer is not None:
                self.observer.conversation_transferred(
                    conversation_id, previous, to_volunteer
                )
            self.hub.to_visitor(
                conversation_id,
                {
                    "type": "assigned",
                    "volunteer": await self._display_name(to_volunteer),
                },
            )
        self._changed()
        logger.info(
            "conversation %s transferred from volunteer %d to volunteer %d",
            conversation_id,
            previous,
            to_volunteer,
        )
        return previous

    def _undo_transfer(self, conversation_id: str, previous: int) -> None:
        self.pairing.remove(conversation_id)
        self.pairing.assign(previous, conversation_id)

    def _changed(self) -> None:
        if self.observer is not None:
            self.observer.conversations_changed()

    # Shared

    async def end(self, conversation_id: str, status: str, reason: str) -> None:
        """Close a conversation and tell both sides; closing twice is harmless."""
        async with self._pairing_lock, self._lock(conversation_id):
            if not await self.store.end_conversation(conversation_id, status, reason):
                return
            was_waiting = self.pairing.position(conversation_id) is not None
            volunteer = self.pairing.remove(conversation_id)
            self._cancel_visitor_timer(conversation_id)
            self._forget_presence(conversation_id)
            self._languages.pop(conversation_id, None)
            self._queued_at.pop(conversation_id, None)
            self._sent_positions.pop(conversation_id, None)
            frame = self._ended_frame(conversation_id, reason)
            self.hub.to_visitor(conversation_id, frame)
            if volunteer is not None:
                self.hub.to_volunteer(volunteer, frame)
            if was_waiting:
                self._announce_queue()
            self._joined.pop(conversation_id, None)
        self._conversation_locks.pop(conversation_id, None)
        self._changed()
        logger.info("conversation %s %s (%s)", conversation_id, status, reason)

    async def _owned(
        self, volunteer_id: int, conversation_id: str | None, client_id: str | None
    ) -> str:
        """Return the conversation id if it is the volunteer's open conversation.

        Raises ``ProtocolError``: ``conversation_ended`` for one of theirs that has
        closed, ``forbidden`` for anyone else's or an unknown id.
        """
        if conversation_id is None:
            raise ProtocolError("forbidden", "Name one of your conversations.")
        if self.pairing.volunteer_of(conversation_id) != volunteer_id:
            stored = await self.store.get_conversation(conversation_id)
            if stored and not stored.is_open and stored.volunteer_id == volunteer_id:
                raise ProtocolError(
                    "conversation_ended",
                    "This conversation has ended.",
                    client_id=client_id,
                    conversation=conversation_id,
                )
            raise ProtocolError(
                "forbidden",
                "This conversation is not one of yours.",
                client_id=client_id,
                conversation=conversation_id,
            )
        return conversation_id

    async def _store_and_deliver(
        self,
        conversation_id: str,
        sender: str,
        send: protocol.Send,
        volunteer_id: int | None,
        resource: dict[str, str] | None = None,
    ) -> None:
        async with self._lock(conversation_id):
            if volunteer_id is not None and not self.may_write(
                conversation_id, volunteer_id
            ):
                # A transfer or a leave won the race for the conversation lock.
                raise ProtocolError(
                    "forbidden",
                    "This conversation is not one of yours.",
                    client_id=send.client_id,
                    conversation=conversation_id,
                )
            try:
                message, created = await self.store.add_message(
                    conversation_id,
                    sender,
                    send.client_id,
                    send.body,
                    volunteer_id,
                    resource,
                )
            except ConversationClosedError:
                raise ProtocolError(
                    "conversation_ended",
                    "This conversation has ended.",
                    client_id=send.client_id,
                    conversation=conversation_id,
                ) from None
            except StoreError:
                logger.exception("storing a message in %s failed", conversation_id)
                raise ProtocolError(
                    "storage_failed",
                    "The message could not be saved. Please send it again.",
                    client_id=send.client_id,
                    conversation=conversation_id,
                ) from None
            ack = {
                "type": "ack",
                "conversation": conversation_id,
                "client_id": send.client_id,
                "seq": message.seq,
            }
            author = (
                await self._display_name(volunteer_id)
                if volunteer_id is not None
                else None
            )
            frame = message_frame(message, author)
            volunteer = self.pairing.volunteer_of(conversation_id)
            # Every socket of both sides gets the acknowledgement and the message;
            # a retried send is acknowledged again but delivered only once.
            if sender == "visitor":
                self.hub.to_visitor(conversation_id, ack)
            elif volunteer_id is not None:
                self.hub.to_volunteer(volunteer_id, ack)
            if created:
                metrics.MESSAGES.labels(sender).inc()
                self.hub.to_visitor(conversation_id, frame)
                staff_frame = dict(frame)
                if volunteer_id is not None and volunteer_id != volunteer:
                    staff_frame["supervisor"] = True
                if volunteer is not None:
                    mine = sender == "volunteer" and volunteer_id == volunteer
                    self.hub.to_volunteer(volunteer, {**staff_frame, "mine": mine})
                if self.observer is not None:
                    self.observer.message_stored(conversation_id, staff_frame)
                self._changed()

    def _lock(self, conversation_id: str) -> asyncio.Lock:
        lock = self._conversation_locks.get(conversation_id)
        if lock is None:
            lock = self._conversation_locks[conversation_id] = asyncio.Lock()
        return lock

    async def _author(self, message: Message) -> str | None:
        if message.volunteer_id is None:
            return None
        return await self._display_name(message.volunteer_id)

    async def _volunteer_frame(
        self, message: Message, recipient: int
    ) -> dict[str, Any]:
        """Return a message frame for a dashboard, with ``mine`` for its own replies."""
        frame = message_frame(message, await self._author(message))
        frame["mine"] = message.volunteer_id == recipient
        return frame

    async def display_name(self, volunteer_id: int) -> str:
        """Return the display name visitors see for a volunteer."""
        return await self._display_name(volunteer_id)

    async def _display_name(self, volunteer_id: int) -> str:
        name = self._display_names.get(volunteer_id)
        if name is None:
            volunteer = await self.store.get_volunteer(volunteer_id)
            name = volunteer.display_name if volunteer else "A volunteer"
            self._display_names[volunteer_id] = name
        return name

    async def _requeue_stored(self, conversation_ids: list[str]) -> None:
        try:
            await self.store.requeue_conversations(conversation_ids)
        except StoreError:
            logger.exception(
                "requeueing %d conversations failed", len(conversation_ids)
            )

    @staticmethod
    def _ended_frame(conversation_id: str, reason: str | None) -> dict[str, Any]:
        return {
            "type": "ended",
            "conversation": conversation_id,
            "reason": reason or "abandoned",
        }

    def _queue_frame(self) -> dict[str, Any]:
        entries = [
            {
                "conversation": conversation_id,
                "queued_at": self._queued_at.get(conversation_id),
                "position": index + 1,
                "language": self.language_of(conversation_id),
            }
            for index, conversation_id in enumerate(self.pairing.queue)
        ]
        return {"type": "queue", "entries": entries}

    def _announce_queue(self) -> None:
        """Send volunteers the queue, and waiting visitors their new positions."""
        self._changed()
        self.hub.to_all_volunteers(self._queue_frame())
        for index, conversation_id in enumerate(self.pairing.queue):
            position = index + 1
            if self._sent_positions.get(conversation_id) != position:
                self._sent_positions[conversation_id] = position
                self.hub.to_visitor(
                    conversation_id, {"type": "queued", "position": position}
                )

    async def _record_availability(self, volunteer_id: int) -> None:
        """Record whether the volunteer is switched on and connected now."""
        await self.availability.update(
            volunteer_id,
            self.pairing.is_available(volunteer_id)
            and self.hub.volunteer_connected(volunteer_id),
        )

    def _announce_availability(self) -> None:
        available = self.volunteers_available()
        if available != self._any_available:
            self._any_available = available
            self.hub.to_all_visitors(self.visitor_status_frame())

    # Grace timers

    def _start_visitor_timer(self, conversation_id: str) -> None:
        self._cancel_visitor_timer(conversation_id)
        self._visitor_timers[conversation_id] = self._spawn(
            self._expire_visitor(conversation_id), f"visitor-grace-{conversation_id}"
        )

    def _cancel_visitor_timer(self, conversation_id: str) -> None:
        task = self._visitor_timers.pop(conversation_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _expire_visitor(self, conversation_id: str) -> None:
        await asyncio.sleep(self.timeouts.visitor)
        if self.visitor_present(conversation_id):
            return
        self._visitor_timers.pop(conversation_id, None)
        await self.end(conversation_id, "abandoned", "abandoned")

    def _start_volunteer_timer(self, volunteer_id: int) -> None:
        if volunteer_id in self._volunteer_timers:
            return
        self._volunteer_timers[volunteer_id] = self._spawn(
            self._expire_volunteer(volunteer_id), f"volunteer-grace-{volunteer_id}"
        )

    def _cancel_volunteer_timer(self, volunteer_id: int) -> None:
        task = self._volunteer_timers.pop(volunteer_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _expire_volunteer(self, volunteer_id: int) -> None:
        await asyncio.sleep(self.timeouts.volunteer)
        self._volunteer_timers.pop(volunteer_id, None)
        if not self.hub.volunteer_connected(volunteer_id):
            await self.hand_back(volunteer_id)

    @staticmethod
    def _spawn(coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coroutine, name=name)
        task.add_done_callback(_log_task_failure)
        return task


def _log_task_failure(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        logger.error("background task %s failed", task.get_name(), exc_info=error)
