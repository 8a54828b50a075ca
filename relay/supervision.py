"""Supervision: the overview of every chat, read-only watching, whispers,
"Need support" alerts, and breaks after hard chats.

``Supervision`` listens to ``ChatService`` as its observer and keeps, in this
process, which supervisor sockets follow the overview and which watch a
conversation. Joining and transfers change conversations, so they live in
``ChatService``; this module checks and records them.

Nothing here reaches a visitor: whispers go to the assigned volunteer's
sockets and to supervisors, and they are stored apart from messages.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

from relay.audit import audit
from relay.conversations import ChatService, message_frame
from relay.hub import Hub, Peer
from relay.protocol import ProtocolError
from relay.store import (
    ConversationClosedError,
    Store,
    SupportAlert,
    Whisper,
)

logger = logging.getLogger("relay.supervision")

# Changes that arrive within this many seconds reach supervisors as one
# ``overview`` frame.
OVERVIEW_DELAY_SECONDS = 0.25


def whisper_frame(whisper: Whisper, author: str) -> dict[str, Any]:
    """Return the ``whisper`` frame for the volunteer and supervisors."""
    return {
        "type": "whisper",
        "conversation": whisper.conversation_id,
        "id": whisper.id,
        "after_seq": whisper.after_seq,
        "body": whisper.body,
        "author": author,
        "sent_at": whisper.created_at,
    }


def period_starts(now: datetime) -> tuple[str, str]:
    """Return the start of the UTC day and of the UTC week (Monday) of ``now``."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    week = day - timedelta(days=day.weekday())
    return _iso(day), _iso(week)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Supervision:
    """Supervisors' view of this relay process, and volunteers' breaks."""

    def __init__(
        self, store: Store, hub: Hub, chat: ChatService, break_seconds: float
    ) -> None:
        self.store = store
        self.hub = hub
        self.chat = chat
        self.break_seconds = break_seconds
        self._supervisors: dict[int, set[Peer]] = {}
        self._subscribers: set[Peer] = set()
        self._watchers: dict[str, set[Peer]] = {}
        self._breaks: dict[int, tuple[str, asyncio.Task[None]]] = {}
        self._push: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        chat.observer = self

    async def stop(self) -> None:
        """Cancel break timers and pending pushes; breaks end with the process."""
        tasks = [task for _, task in self._breaks.values()] + list(self._tasks)
        if self._push is not None:
            tasks.append(self._push)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._breaks.clear()

    # Supervisor sockets

    def supervisor_connected(self, supervisor_id: int, peer: Peer) -> None:
        self._supervisors.setdefault(supervisor_id, set()).add(peer)

    def supervisor_disconnected(self, supervisor_id: int, peer: Peer) -> None:
        """Forget a supervisor socket and everything it subscribed to."""
        peers = self._supervisors.get(supervisor_id)
        if peers is not None:
            peers.discard(peer)
            if not peers:
                del self._supervisors[supervisor_id]
        self._subscribers.discard(peer)
        for conversation_id in list(self._watchers):
            self._unwatch(peer, conversation_id)

    def supervisors_online(self) -> int:
        """Return how many supervisors have a dashboard socket open."""
        return len(self._supervisors)

    def _to_supervisors(self, frame: dict[str, Any]) -> None:
        for peers in self._supervisors.values():
            for peer in peers:
                peer.send(frame)

    # The overview

    async def subscribe(self, peer: Peer) -> None:
        """Send a supervisor socket the overview now and after every change."""
        self._subscribers.add(peer)
        peer.send(await self.overview())

    async def overview(self) -> dict[str, Any]:
        """Return the ``overview`` frame: conversations, volunteers and alerts."""
        chat = self.chat
        sites = {site.id: site.name for site in await self.store.list_sites()}
        unanswered = await self.store.unanswered_counts()
        alerts = await self.store.open_support_alerts()
        alerted = {alert.conversation_id for alert in alerts}
        conversations = []
        for conversation in await self.store.list_open_conversations():
            volunteer = chat.pairing.volunteer_of(conversation.id)
            waiting = chat.pairing.position(conversation.id) is not None
            if volunteer is None and not waiting:
                continue
            joined = sorted(
                [await chat.display_name(s) for s in chat.joined(conversation.id)]
            )
            conversations.append(
                {
                    "conversation": conversation.id,
                    "site": sites.get(conversation.site_id, ""),
                    "status": "waiting" if waiting else "active",
                    "position": chat.pairing.position(conversation.id),
                    "created_at": conversation.created_at,
                    "assigned_at": None if waiting else conversation.assigned_at,
                    "volunteer": await chat.display_name(volunteer)
                    if volunteer is not None
                    else None,
                    "volunteer_id": volunteer,
                    "visitor_connected": chat.visitor_present(conversation.id),
                    "transport": chat.transport_of(conversation.id),
                    "unanswered": unanswered.get(conversation.id, 0),
                    "joined": joined,
                    "support_alert": conversation.id in alerted,
                }
            )
        return {
            "type": "overview",
            "conversations": conversations,
            "volunteers": await self._volunteers(),
            "alerts": [await self._alert_entry(alert) for alert in alerts],
            "supervisors_online": self.supervisors_online(),
        }

    async def _volunteers(self) -> list[dict[str, Any]]:
        day_start, week_start = period_starts(datetime.now(UTC))
        loads = await self.store.volunteer_load(day_start, week_start)
        pairing = self.chat.pairing
        entries = []
        for volunteer in await self.store.list_volunteers():
            if not volunteer.active:
                continue
            load = loads.get(volunteer.id)
            on_break = self._breaks.get(volunteer.id)
            entries.append(
                {
                    "id": volunteer.id,
                    "display_name": volunteer.display_name,
                    "role": volunteer.role,
                    "connected": self.hub.volunteer_connected(volunteer.id),
                    "available": pairing.is_available(volunteer.id),
                    "break_until": on_break[0] if on_break else None,
                    "chats": len(pairing.conversations_of(volunteer.id)),
                    "capacity": volunteer.capacity,
                    "available_seconds_today": round(
                        load.available_seconds_today if load else 0
                    ),
                    "available_seconds_week": round(
                        load.available_seconds_week if load else 0
                    ),
                    "chats_today": load.chats_today if load else 0,
                    "chats_week": load.chats_week if load else 0,
                    "hard_today": load.hard_today if load else 0,
                    "hard_week": load.hard_week if load else 0,
                }
            )
        return entries

    async def _alert_entry(self, alert: SupportAlert) -> dict[str, Any]:
        return {
            "id": alert.id,
            "conversation": alert.conversation_id,
            "volunteer_id": alert.volunteer_id,
            "volunteer": await self.chat.display_name(alert.volunteer_id),
            "raised_at": alert.raised_at,
        }

    # ChatObserver

    def conversations_changed(self) -> None:
        """Schedule one ``overview`` frame for the subscribed supervisors."""
        if not self._subscribers:
            return
        if self._push is None or self._push.done():
            self._push = self._spawn(self._push_overview(), "supervision-overview")

    async def _push_overview(self) -> None:
        await asyncio.sleep(OVERVIEW_DELAY_SECONDS)
        frame = await self.overview()
        for peer in list(self._subscribers):
            peer.send(frame)

    def message_stored(self, conversation_id: str, frame: dict[str, Any]) -> None:
        for peer in self._watchers.get(conversation_id, ()):
            peer.send({**frame, "mine": False})

    def conversation_transferred(
        self, conversation_id: str, previous: int, volunteer: int
    ) -> None:
        self._spawn(
            self._send_whispers(conversation_id, volunteer),
            f"transfer-whispers-{conversation_id}",
        )

    async def _send_whispers(self, conversation_id: str, volunteer: int) -> None:
        for whisper in await self.store.whispers_of(conversation_id):
            frame = await self._whisper_frame(whisper)
            self.hub.to_volunteer(volunteer, frame)

    async def send_whispers_to(self, volunteer_id: int, peer: Peer) -> None:
        """Send a dashboard the whispers of its chats, and its break, after hello."""
        for conversation_id in self.chat.pairing.conversations_of(volunteer_id):
            for whisper in await self.store.whispers_of(conversation_id):
                peer.send(await self._whisper_frame(whisper))
        on_break = self._breaks.get(volunteer_id)
        if on_break is not None:
            peer.send({"type": "break", "until": on_break[0]})

    async def send_open_alerts(self, peer: Peer) -> None:
        """Send a supervisor's dashboard every alert not acknowledged yet."""
        for alert in await self.store.open_support_alerts():
            peer.send({"type": "support_alert", **await self._alert_entry(alert)})

    async def _whisper_frame(self, whisper: Whisper) -> dict[str, Any]:
        author = (
            await self.chat.display_name(whisper.supervisor_id)
            if whisper.supervisor_id is not None
            else "A supervisor"
        )
        return whisper_frame(whisper, author)

    # Watching, whispers, joining and transfers

    async def watch(self, peer: Peer, supervisor_id: int, conversation_id: str) -> None:
        """Send a supervisor socket a conversation's history, then its live messages.

        Live messages may arrive before the history ends; the page places them
        by ``seq``. Raises ``ProtocolError`` (``not_found``) for an unknown id.
        """
        conversation = await self.store.get_conversation(conversation_id)
        if conversation is None:
            raise ProtocolError(
                "not_found",
                "This conversation does not exist.",
                conversation=conversation_id,
            )
        self._watchers.setdefault(conversation_id, set()).add(peer)
        volunteer = self.chat.pairing.volunteer_of(conversation_id)
        peer.send(
            {
                "type": "watching",
                "conversation": conversation_id,
                "status": conversation.status,
                "volunteer": await self.chat.display_name(volunteer)
                if volunteer is not None
                else None,
                "joined": supervisor_id in self.chat.joined(conversation_id),
            }
        )
        for message in await self.store.messages_after(conversation_id, 0):
            author = (
                await self.chat.display_name(message.volunteer_id)
                if message.volunteer_id is not None
                else None
            )
            frame = message_frame(message, author)
            peer.send({**frame, "mine": False})
        for whisper in await self.store.whispers_of(conversation_id):
            peer.send(await self._whisper_frame(whisper))
        await self.audit(supervisor_id, "watch", "conversation", conversation_id)

    def unwatch(self, peer: Peer, conversation_id: str) -> None:
        self._unwatch(peer, conversation_id)

    def _unwatch(self, peer: Peer, conversation_id: str) -> None:
        peers = self._watchers.get(conversation_id)
        if peers is None:
            return
        peers.discard(peer)
        if not peers:
            del self._watchers[conversation_id]

    async def whisper(
        self, supervisor_id: int, conversation_id: str, body: str
    ) -> None:
        """Store a whisper and deliver it to the assigned volunteer and watchers.

        Raises ``ProtocolError``: ``not_found`` unless a volunteer has the
        conversation, ``conversation_ended`` when it ended meanwhile.
        """
        volunteer = self.chat.pairing.volunteer_of(conversation_id)
        if volunteer is None:
            raise ProtocolError(
                "not_found",
                "Only a conversation with a volunteer can get a whisper.",
                conversation=conversation_id,
            )
        try:
            whisper = await self.store.add_whisper(conversation_id, supervisor_id, body)
        except ConversationClosedError:
            raise ProtocolError(
                "conversation_ended",
                "This conversation has ended.",
                conversation=conversation_id,
            ) from None
        frame = await self._whisper_frame(whisper)
        # The volunteer may have changed while the whisper was being stored.
        current = self.chat.pairing.volunteer_of(conversation_id)
        if current is not None:
            self.hub.to_volunteer(current, frame)
        for peer in self._watchers.get(conversation_id, ()):
            peer.send(frame)
        await self.audit(supervisor_id, "whisper", "conversation", conversation_id)

    async def join(self, peer: Peer, supervisor_id: int, conversation_id: str) -> None:
        """Join a conversation; the socket that asked gets ``joined``."""
        await self.chat.join(conversation_id, supervisor_id)
        peer.send({"type": "joined", "conversation": conversation_id})
        await self.audit(supervisor_id, "join", "conversation", conversation_id)

    async def leave(self, peer: Peer, supervisor_id: int, conversation_id: str) -> None:
        """Leave a conversation; the socket that asked gets ``left``."""
        await self.chat.leave(conversation_id, supervisor_id)
        peer.send({"type": "left", "conversation": conversation_id})
        await self.audit(supervisor_id, "leave", "conversation", conversation_id)

    async def transfer(
        self, supervisor_id: int, conversation_id: str, to_volunteer: int
    ) -> None:
        """Transfer a conversation; a volunteer on a break cannot receive one."""
        if to_volunteer in self._breaks:
            raise ProtocolError(
                "not_available",
                "That volunteer is on a break.",
                conversation=conversation_id,
            )
        await self.chat.transfer(conversation_id, to_volunteer)
        await self.audit(supervisor_id, "transfer", "conversation", conversation_id)

    # Need support

    async def need_support(self, volunteer_id: int, conversation_id: str) -> None:
        """Alert every connected supervisor about one of the volunteer's chats.

        The volunteer gets ``support_requested`` with how many supervisors are
        online, so the dashboard can say when nobody is. Asking again while the
        chat's alert is open sends that alert again instead of storing another.
        Raises ``ProtocolError`` (``forbidden``) for a conversation not theirs.
        """
        if self.chat.pairing.volunteer_of(conversation_id) != volunteer_id:
            raise ProtocolError(
                "forbidden",
                "This conversation is not one of yours.",
                conversation=conversation_id,
            )
        open_alerts = [
            alert
            for alert in await self.store.open_support_alerts()
            if alert.conversation_id == conversation_id
            and alert.volunteer_id == volunteer_id
        ]
        if open_alerts:
            alert = open_alerts[0]
        else:
            alert = await self.store.add_support_alert(volunteer_id, conversation_id)
        entry = await self._alert_entry(alert)
        self._to_supervisors({"type": "support_alert", **entry})
        online = self.supervisors_online()
        self.hub.to_volunteer(
            volunteer_id,
            {
                "type": "support_requested",
                "conversation": conversation_id,
                "supervisors_online": online,
            },
        )
        self.conversations_changed()
        logger.info(
            "volunteer %d asked for support in %s; %d supervisors online",
            volunteer_id,
            conversation_id,
            online,
        )

    async def acknowledge(self, supervisor_id: int, alert_id: int) -> None:
        """Mark an alert acknowledged and tell supervisors and the volunteer.

        Raises ``ProtocolError`` (``not_found``) for an unknown id or one
        already acknowledged, so a second supervisor learns they were late.
        """
        alerts = {alert.id: alert for alert in await self.store.open_support_alerts()}
        alert = alerts.get(alert_id)
        if alert is None or not await self.store.acknowledge_support_alert(
            alert_id, supervisor_id
        ):
            raise ProtocolError("not_found", "This alert is not open.")
        name = await self.chat.display_name(supervisor_id)
        self._to_supervisors(
            {"type": "support_acknowledged", "id": alert_id, "by": name}
        )
        self.hub.to_volunteer(
            alert.volunteer_id,
            {
                "type": "support_acknowledged",
                "id": alert_id,
                "conversation": alert.conversation_id,
                "by": name,
            },
        )
        self.conversations_changed()
        await self.audit(supervisor_id, "acknowledge", "support_alert", str(alert_id))

    # Hard chats and breaks

    def on_break(self, volunteer_id: int) -> bool:
        return volunteer_id in self._breaks

    async def mark_hard(self, volunteer_id: int, conversation_id: str) -> None:
        """Record a hard chat and start the volunteer's break.

        The volunteer is switched off until the break ends, by its timer or by
        ``end_break``, and then switched on again. Supervisors get
        ``hard_chat``. Raises ``ProtocolError`` (``not_found``) unless the
        conversation is an ended one of theirs not marked yet.
        """
        until = datetime.now(UTC) + timedelta(seconds=self.break_seconds)
        until_text = _iso(until)
        if not await self.store.add_hard_chat(
            volunteer_id, conversation_id, until_text
        ):
            raise ProtocolError(
                "not_found",
                "Only an ended chat of yours can be marked as hard, once.",
                conversation=conversation_id,
            )
        await self.chat.set_availability(volunteer_id, False)
        previous = self._breaks.pop(volunteer_id, None)
        if previous is not None:
            previous[1].cancel()
        timer = self._spawn(self._break_ends(volunteer_id), f"break-{volunteer_id}")
        self._breaks[volunteer_id] = (until_text, timer)
        self.hub.to_volunteer(volunteer_id, {"type": "break", "until": until_text})
        self._to_supervisors(
            {
                "type": "hard_chat",
                "volunteer_id": volunteer_id,
                "volunteer": await self.chat.display_name(volunteer_id),
                "conversation": conversation_id,
                "break_until": until_text,
            }
        )
        self.conversations_changed()
        logger.info(
            "volunteer %d marked %s as hard; break until %s",
            volunteer_id,
            conversation_id,
            until_text,
        )

    async def end_break(self, volunteer_id: int) -> None:
        """End a volunteer's break early and switch them on again."""
        entry = self._breaks.pop(volunteer_id, None)
        if entry is None:
            return
        if entry[1] is not asyncio.current_task():
            entry[1].cancel()
        await self._finish_break(volunteer_id)

    async def _break_ends(self, volunteer_id: int) -> None:
        await asyncio.sleep(self.break_seconds)
        if volunteer_id in self._breaks:
            del self._breaks[volunteer_id]
            await self._finish_break(volunteer_id)

    async def _finish_break(self, volunteer_id: int) -> None:
        await self.store.end_breaks(volunteer_id)
        self.hub.to_volunteer(volunteer_id, {"type": "break_ended"})
        # A volunteer who closed the dashboard meanwhile stays away.
        if self.hub.volunteer_connected(volunteer_id):
            await self.chat.set_availability(volunteer_id, True)
        self.conversations_changed()
        logger.info("volunteer %d break ended", volunteer_id)

    # Audit

    async def audit(
        self, actor_id: int, action: str, target_kind: str, target_id: str
    ) -> None:
        """Record a supervisory action with ids only, never message text."""
        await audit(
            self.store, actor_id, f"supervision.{action}", target_kind, target_id
        )

    def _spawn(
        self, coroutine: Coroutine[Any, Any, None], name: str
    ) -> asyncio.Task[None]:
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            logger.error("background task %s failed", task.get_name(), exc_info=error)
