"""Visitors without a socket: the chat page with scripts switched off.

The forms of the no-script chat page and its reloading transcript frame drive the
same ``ChatService`` operations as the visitor WebSocket. This module adds what
plain HTTP needs on top: an idempotent start (a form's key maps to the one
conversation it created), look-up by conversation token, a snapshot of what the
transcript shows, and the short-lived signed tokens of the transcript frame.
``docs/nojs.md`` describes the design.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer

from relay import protocol
from relay.conversations import ChatService, hash_token
from relay.store import Conversation, Message, Site

logger = logging.getLogger("relay.nojs")

# How long a transcript frame's URL works; every render issues a fresh one.
TRANSCRIPT_TOKEN_SECONDS = 300
# How long a start form's key is remembered, so that a resubmitted start finds the
# conversation it created instead of opening a second one.
START_KEY_SECONDS = 3600
START_KEYS_MAX = 10_000


def new_form_key() -> str:
    """Return an idempotency key for one rendered form; valid as a ``client_id``."""
    return "n" + secrets.token_urlsafe(15)


@dataclass(frozen=True)
class Started:
    """The outcome of a start form: the conversation and its token, or None."""

    conversation: Conversation
    token: str


@dataclass(frozen=True)
class View:
    """The state of one conversation as the transcript frame shows it."""

    conversation: Conversation
    position: int | None
    requeued: bool
    volunteer_name: str | None
    messages: list[Message]


class NoScriptVisitors:
    """Chat operations for visitors whose browser runs no scripts."""

    def __init__(self, chat: ChatService, secret_key: str, max_chars: int) -> None:
        self.chat = chat
        self.max_chars = max_chars
        self._transcripts = URLSafeTimedSerializer(secret_key, salt="vso-transcript")
        self._starts: OrderedDict[tuple[int, str], tuple[str, str, float]] = (
            OrderedDict()
        )
        self._start_lock = asyncio.Lock()

    # Conversations

    async def start(
        self, site: Site, form_key: str, language: str = "en"
    ) -> Started | None:
        """Start a conversation once per form key; None when nobody is available.

        A second submission of the same form (double click, Back and resubmit,
        reload of the POST) returns the conversation the first one created.
        """
        async with self._start_lock:
            self._expire_starts()
            known = self._starts.get((site.id, form_key))
            if known is not None:
                conversation = await self.chat.store.get_conversation(known[0])
                if conversation is not None:
                    return Started(conversation, known[1])
            started = await self.chat.start_without_socket(site, language)
            if started is None:
                return None
            conversation, token = started
            self._starts[(site.id, form_key)] = (
                conversation.id,
                token,
                time.monotonic() + START_KEY_SECONDS,
            )
            while len(self._starts) > START_KEYS_MAX:
                self._starts.popitem(last=False)
            return Started(conversation, token)

    def _expire_starts(self) -> None:
        now = time.monotonic()
        while self._starts:
            key, (_, _, expires) = next(iter(self._starts.items()))
            if expires > now:
                break
            del self._starts[key]

    def _forget_starts(self, conversation_id: str) -> None:
        for key in [k for k, v in self._starts.items() if v[0] == conversation_id]:
            del self._starts[key]

    async def find(self, token: str | None, site: Site) -> Conversation | None:
        """Return the conversation of a token on this site, open or ended."""
        if not token or not protocol.TOKEN_PATTERN.fullmatch(token):
            return None
        conversation = await self.chat.store.get_conversation_by_token_hash(
            hash_token(token)
        )
        if conversation is None or conversation.site_id != site.id:
            return None
        return conversation

    async def send(self, conversation: Conversation, client_id: str, body: str) -> None:
        """Store a visitor message once per ``client_id``.

        Raises ``ProtocolError`` as the WebSocket does: ``empty_message``,
        ``message_too_long``, ``conversation_ended``, ``storage_failed``.
        """
        if not protocol.CLIENT_ID_PATTERN.fullmatch(client_id):
            raise protocol.ProtocolError("invalid_frame", "The form is incomplete.")
        text = protocol.clean_body(body, max_chars=self.max_chars)
        if not self.chat.is_open(conversation.id):
            raise protocol.ProtocolError(
                "conversation_ended", "This conversation has ended."
            )
        await self.chat.visitor_send(
            conversation.id, protocol.Send(client_id=client_id, body=text)
        )
        await self.chat.visitor_seen(conversation.id)

    async def end(self, conversation: Conversation) -> None:
        """End the conversation; every token of it stops working."""
        self._forget_starts(conversation.id)
        await self.chat.visitor_end(conversation.id)

    async def seen(self, conversation: Conversation) -> None:
        await self.chat.visitor_seen(conversation.id)

    async def view(self, conversation_id: str) -> View | None:
        """Return the current state and messages of a conversation, or None."""
        conversation = await self.chat.store.get_conversation(conversation_id)
        if conversation is None:
            return None
        messages = await self.chat.store.messages_after(conversation_id, 0)
        position = self.chat.pairing.position(conversation_id)
        volunteer = self.chat.pairing.volunteer_of(conversation_id)
        name = await self.chat.display_name(volunteer) if volunteer else None
        requeued = position is not None and any(
            message.sender == "volunteer" for message in messages
        )
        return View(conversation, position, requeued, name, messages)

    # Transcript tokens

    def transcript_token(self, conversation_id: str) -> str:
        """Return a signed, read-only token for the transcript frame's URL."""
        return self._transcripts.dumps(conversation_id)

    def transcript_conversation(self, token: str | None) -> str | None:
        """Return the conversation id of a transcript token, or None if bad or old."""
        if not token or len(token) > 256:
            return None
        try:
            value = self._transcripts.loads(token, max_age=TRANSCRIPT_TOKEN_SECONDS)
        except BadSignature:
            return None
        return value if isinstance(value, str) else None
