"""Messages for when nobody is online: leaving one, reply codes and the inbox.

``InboxService`` is the one place that changes message conversations, for the
visitor's pages and the volunteers' inbox alike; e-mail import uses the same
store API. It decides whether the chat is offline for a site (outside opening
hours, or no volunteer available), stores a visitor's message under a new
reply code, finds a conversation again by its code with wrong codes
rate-limited, and runs the volunteers' claim, reply, close and block.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from relay import hours, protocol
from relay.conversations import ChatService
from relay.notify import LogOnlyNotifier, ReplyNotifier
from relay.protocol import ProtocolError
from relay.ratelimit import RateLimiter
from relay.replycodes import hash_reply_code, new_reply_code, normalise_reply_code
from relay.store import (
    ClaimedByOtherError,
    ConversationBlockedError,
    ConversationClosedError,
    InboxEntry,
    Message,
    Site,
    Store,
    StoreError,
)

logger = logging.getLogger("relay.inbox")

MAX_ADDRESS_CHARS = 254
# A plain check that catches typing slips; only a delivered mail proves more.
_ADDRESS_PATTERN = re.compile(
    r"[^@\s\x00-\x1f\x7f<>]+@[^@\s\x00-\x1f\x7f<>]+\.[^@\s.\x00-\x1f\x7f<>]+"
)
# A sent form's key is remembered this long, so that a resubmission (double
# click, reload of the POST) shows the same code instead of leaving a second
# message under a code the visitor never sees.
SENT_KEY_SECONDS = 600
SENT_KEYS_MAX = 10_000


class InboxError(Exception):
    """An inbox operation was rejected; ``code`` names why, for the page."""

    def __init__(self, code: str, message: str, **details: object) -> None:
        super().__init__(message)
        self.code = code
        self.details = details


@dataclass(frozen=True)
class Availability:
    """Whether a site's chat can start now, and if not, why."""

    within_hours: bool
    volunteers_available: bool
    # When the site opens next, in its zone; None while open or with no hours.
    next_opening: datetime | None

    @property
    def chat_open(self) -> bool:
        return self.within_hours and self.volunteers_available


@dataclass(frozen=True)
class LeftMessage:
    """A message left by a visitor: its conversation and its reply code."""

    conversation_id: str
    reply_code: str


def check_notify_address(text: str) -> str | None:
    """Return the trimmed address, None for an empty field, or raise
    ``InboxError`` (``invalid_address``) for one that cannot be an address."""
    address = text.strip()
    if not address:
        return None
    if len(address) > MAX_ADDRESS_CHARS or not _ADDRESS_PATTERN.fullmatch(address):
        raise InboxError(
            "invalid_address", "The e-mail address is not valid.", address=address
        )
    return address


def _clean_body(body: str, max_chars: int) -> str:
    try:
        return protocol.clean_body(body, max_chars=max_chars)
    except ProtocolError as error:
        code = error.code if error.code != "invalid_frame" else "empty_message"
        raise InboxError(code, str(error)) from None


def utc_clock() -> datetime:
    return datetime.now(UTC)


class InboxService:
    """Message conversations in this relay process.

    Wrong reply codes are limited per keyed address hash (``attempts_burst``
    at once, one more every ``attempts_per_seconds``) and in total (a global
    ceiling of ``global_burst``, one more every ``global_per_seconds``). The
    limits live in memory only.
    """

    def __init__(
        self,
        store: Store,
        chat: ChatService,
        secret_key: str,
        *,
        max_chars: int,
        notifier: ReplyNotifier | None = None,
        clock: Callable[[], datetime] = utc_clock,
        attempts_burst: int = 5,
        attempts_per_seconds: float = 120.0,
        global_burst: int = 200,
        global_per_seconds: float = 3.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.chat = chat
        self.max_chars = max_chars
        self.notifier: ReplyNotifier = notifier or LogOnlyNotifier()
        self._secret_key = secret_key
        self._clock = clock
        self._monotonic = monotonic
        self._wrong_codes = RateLimiter(
            burst=attempts_burst, per_seconds=attempts_per_seconds, clock=monotonic
        )
        self._all_wrong_codes = RateLimiter(
            burst=global_burst, per_seconds=global_per_seconds, clock=monotonic
        )
        self._sent: OrderedDict[tuple[int, str], tuple[LeftMessage, float]] = (
            OrderedDict()
        )
        self._send_lock = asyncio.Lock()
        self._notices: set[asyncio.Task[None]] = set()

    # Offline state

    async def availability(self, site: Site) -> Availability:
        """Return whether the site's chat is within hours and staffed now."""
        schedule = await self.store.get_site_schedule(site.id)
        now = self._clock()
        return Availability(
            within_hours=hours.is_open(schedule, now),
            volunteers_available=self.chat.volunteers_available(),
            next_opening=hours.next_opening(schedule, now),
        )

    async def within_hours(self, site: Site) -> bool:
        """Return True when the site is within its opening hours now."""
        schedule = await self.store.get_site_schedule(site.id)
        return hours.is_open(schedule, self._clock())

    # Visitors

    async def leave_message(
        self,
        site: Site,
        form_key: str,
        body: str,
        notify_address: str = "",
    ) -> LeftMessage:
        """Store a visitor's message in a new conversation with a new reply code.

        The same ``form_key`` on the same site within ``SENT_KEY_SECONDS``
        returns the first result and stores nothing. Raises ``InboxError``:
        ``empty_message``, ``message_too_long``, ``invalid_address``,
        ``invalid_form`` or ``storage_failed``.
        """
        if not protocol.CLIENT_ID_PATTERN.fullmatch(form_key):
            raise InboxError("invalid_form", "The form is incomplete.")
        text = _clean_body(body, self.max_chars)
        address = check_notify_address(notify_address)
        async with self._send_lock:
            self._expire_sent()
            known = self._sent.get((site.id, form_key))
            if known is not None:
                return known[0]
            code = new_reply_code()
            conversation_id = secrets.token_urlsafe(12)
            try:
                await self.store.create_inbox_conversation(
                    conversation_id,
                    site.id,
                    "message",
                    text,
                    client_id=form_key,
                    reply_code_hash=hash_reply_code(self._secret_key, code),
                    notify_address=address,
                )
            except (StoreError, ValueError) as error:
                logger.error("storing a message on site %d failed: %s", site.id, error)
                raise InboxError(
                    "storage_failed", "The message could not be saved."
                ) from None
            left = LeftMessage(conversation_id, code)
            self._sent[(site.id, form_key)] = (
                left,
                self._monotonic() + SENT_KEY_SECONDS,
            )
            while len(self._sent) > SENT_KEYS_MAX:
                self._sent.popitem(last=False)
        logger.info(
            "message %s left on site %d%s",
            conversation_id,
            site.id,
            " with a notification address" if address else "",
        )
        return left

    def _expire_sent(self) -> None:
        now = self._monotonic()
        while self._sent:
            key, (_, expires) = next(iter(self._sent.items()))
            if expires > now:
                break
            del self._sent[key]

    async def find_by_code(self, address_key: str, code_text: str) -> InboxEntry:
        """Return the conversation of a reply code, open, closed or blocked.

        Raises ``InboxError``: ``rate_limited`` when this address hash or the
        whole relay has given too many wrong codes lately, ``not_found`` for a
        wrong code (which counts against both limits).
        """
        if not self._all_wrong_codes.has_token("all"):
            logger.warning("reply code rejected: the global limit of wrong codes")
            raise InboxError("rate_limited", "Too many wrong codes were entered.")
        if not self._wrong_codes.has_token(address_key):
            logger.info("reply code rejected: too many wrong codes from one address")
            raise InboxError("rate_limited", "Too many wrong codes were entered.")
        code = normalise_reply_code(code_text)
        entry = (
            await self.store.get_inbox_entry_by_reply_code_hash(
                hash_reply_code(self._secret_key, code)
            )
            if code is not None
            else None
        )
        if entry is None:
            self._wrong_codes.allow(address_key)
            self._all_wrong_codes.allow("all")
            logger.info("reply code not found")
            raise InboxError("not_found", "No conversation has this code.")
        return entry

    async def visitor_reply(
        self, entry: InboxEntry, form_key: str, body: str
    ) -> tuple[Message, bool]:
        """Store the visitor's answer once per ``form_key``.

        Raises ``InboxError``: ``empty_message``, ``message_too_long``,
        ``invalid_form``, ``blocked``, ``not_found`` or ``storage_failed``.
        """
        if not protocol.CLIENT_ID_PATTERN.fullmatch(form_key):
            raise InboxError("invalid_form", "The form is incomplete.")
        text = _clean_body(body, self.max_chars)
        try:
            stored = await self.store.add_inbox_visitor_message(
                entry.conversation_id, form_key, text
            )
        except ConversationBlockedError:
            raise InboxError("blocked", "This reply code is blocked.") from None
        except ConversationClosedError:
            raise InboxError("not_found", "The conversation was deleted.") from None
        except StoreError as error:
            logger.error(
                "storing a reply in %s failed: %s", entry.conversation_id, error
            )
            raise InboxError(
                "storage_failed", "The message could not be saved."
            ) from None
        if stored[1]:
            logger.info("visitor answered in %s", entry.conversation_id)
        return stored

    async def visitor_delete(self, entry: InboxEntry) -> bool:
        """Delete the whole conversation of a reply code; False if already gone."""
        deleted = await self.store.delete_inbox_conversation(entry.conversation_id)
        if deleted:
            logger.info(
                "visitor deleted message conversation %s", entry.conversation_id
            )
        return deleted

    async def messages(self, conversation_id: str) -> list[Message]:
        return await self.store.messages_after(conversation_id, 0)

    # Volunteers

    async def claim(
        self, conversation_id: str, volunteer_id: int, *, take_over: bool = False
    ) -> None:
        """Claim a conversation for a volunteer.

        Raises ``InboxError``: ``claimed`` (with ``claimed_by_name``) when
        someone else claimed it and ``take_over`` is False, ``closed`` when it
        is closed or gone.
        """
        if await self.store.claim_inbox_conversation(
            conversation_id, volunteer_id, take_over=take_over
        ):
            logger.info(
                "volunteer %d %s %s",
                volunteer_id,
                "took over" if take_over else "claimed",
                conversation_id,
            )
            return
        entry = await self.store.get_inbox_entry(conversation_id)
        if entry is None or entry.state == "closed":
            raise InboxError("closed", "This conversation is closed.")
        raise InboxError(
            "claimed",
            "Another volunteer claimed this conversation.",
            claimed_by_name=entry.claimed_by_name or "",
        )

    async def release(self, conversation_id: str, volunteer_id: int) -> bool:
        released = await self.store.release_inbox_conversation(
            conversation_id, volunteer_id
        )
        if released:
            logger.info("volunteer %d released %s", volunteer_id, conversation_id)
        return released

    async def reply(
        self,
        conversation_id: str,
        volunteer_id: int,
        form_key: str,
        body: str,
        *,
        take_over: bool = False,
    ) -> Message:
        """Store a volunteer's reply and tell the visitor one waits.

        The notice goes out in the background when the visitor left an
        address, and its failure is logged, never raised. Raises
        ``InboxError``: ``empty_message``, ``message_too_long``,
        ``invalid_form``, ``claimed`` (with ``claimed_by_name``), ``closed``
        or ``storage_failed``.
        """
        if not protocol.CLIENT_ID_PATTERN.fullmatch(form_key):
            raise InboxError("invalid_form", "The form is incomplete.")
        text = _clean_body(body, self.max_chars)
        try:
            message, created = await self.store.record_inbox_reply(
                conversation_id, volunteer_id, form_key, text, take_over=take_over
            )
        except ClaimedByOtherError:
            entry = await self.store.get_inbox_entry(conversation_id)
            raise InboxError(
                "claimed",
                "Another volunteer claimed this conversation.",
                claimed_by_name=entry.claimed_by_name if entry else "",
            ) from None
        except ConversationClosedError:
            raise InboxError("closed", "This conversation is closed.") from None
        except StoreError as error:
            logger.error("storing a reply in %s failed: %s", conversation_id, error)
            raise InboxError(
                "storage_failed", "The reply could not be saved."
            ) from None
        if created:
            logger.info("volunteer %d replied in %s", volunteer_id, conversation_id)
            entry = await self.store.get_inbox_entry(conversation_id)
            if entry is not None and entry.has_notify_address:
                self._notify(conversation_id)
        return message

    def _notify(self, conversation_id: str) -> None:
        task = asyncio.create_task(
            self._send_notice(conversation_id), name=f"notify-{conversation_id}"
        )
        self._notices.add(task)
        task.add_done_callback(self._notices.discard)

    async def _send_notice(self, conversation_id: str) -> None:
        try:
            await self.notifier.reply_waiting(conversation_id)
        except Exception:
            logger.exception("telling the visitor of %s failed", conversation_id)

    async def close(self, conversation_id: str, volunteer_id: int) -> bool:
        closed = await self.store.close_inbox_conversation(conversation_id)
        if closed:
            logger.info("volunteer %d closed %s", volunteer_id, conversation_id)
        return closed

    async def block(self, conversation_id: str, volunteer_id: int) -> bool:
        """Block the conversation's reply code; the visitor can no longer use it."""
        blocked = await self.store.block_inbox_reply_code(conversation_id, volunteer_id)
        if blocked:
            logger.warning(
                "volunteer %d blocked the reply code of %s",
                volunteer_id,
                conversation_id,
            )
        return blocked

    async def stop(self) -> None:
        """Wait briefly for notices under way, then cancel the rest."""
        if not self._notices:
            return
        _, pending = await asyncio.wait(set(self._notices), timeout=5.0)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
