"""Abuse control that identifies nobody: token buckets, keyed address hashes, blocks.

A client address is used only as the input of an HMAC whose random key lives in
memory and is replaced at each UTC midnight; the address itself is never stored,
logged or kept past the call. When the key changes, every bucket and block keyed
by the old hashes is dropped, so nothing links one day's visitors to the next.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from relay.i18n import N_
from relay.i18n import gettext as _
from relay.protocol import ProtocolError

# Shown with every refusal, so a refused visitor still has a way to get help.
# The names are message ids, translated when a refusal is raised.
HELP_CONTACTS: tuple[dict[str, str], ...] = (
    {"name": N_("Emergency (police, ambulance, fire)"), "number": "112"},
    {"name": N_("Victim support line, daily 07:30 to 19:30"), "number": "116 006"},
    {"name": N_("Supportline, 24 hours, free"), "number": "179"},
)
HELP_SENTENCE = N_(
    "If you need help now, call 112 in an emergency, or 116 006 for victim support."
)
MAX_KEYS = 100_000


class RateLimiter:
    """Token buckets per key: ``burst`` at once, one more every ``per_seconds``.

    Keeps at most ``max_keys`` buckets and drops the least recently used one
    beyond that, so a dropped key starts again with a full bucket.
    """

    def __init__(
        self,
        *,
        burst: int,
        per_seconds: float,
        max_keys: int = MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.per_seconds = per_seconds
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, key: str) -> bool:
        """Take one token for ``key``; return False, taking none, when empty."""
        now = self._clock()
        tokens, updated = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - updated) / self.per_seconds)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return allowed

    def has_token(self, key: str) -> bool:
        """Return True when ``allow(key)`` would succeed now, taking nothing."""
        tokens, updated = self._buckets.get(key, (float(self.burst), self._clock()))
        elapsed = self._clock() - updated
        return min(float(self.burst), tokens + elapsed / self.per_seconds) >= 1.0

    def clear(self) -> None:
        self._buckets.clear()


def client_address(
    peer: str | None, forwarded_for: str | None, trusted_proxies: frozenset[str]
) -> str | None:
    """Return the visitor's address as the relay's closest trusted proxy saw it.

    When the direct peer is a trusted proxy, the address is the rightmost entry
    of ``X-Forwarded-For`` that the proxy appended; any entries to its left
    come from the client and are ignored. Otherwise it is the peer itself.
    """
    if peer in trusted_proxies and forwarded_for:
        last = forwarded_for.split(",")[-1].strip()
        if last:
            return last
    return peer


def _utc_day() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


def refusal(code: str, message: str, **fields: Any) -> ProtocolError:
    """Return an error for the visitor that ends with where to get help now.

    ``message`` is already translated; the help texts are translated here, into
    the language of the current request.
    """
    error = ProtocolError(code, f"{message} {_(HELP_SENTENCE)}", **fields)
    error.help = [
        {"name": _(contact["name"]), "number": contact["number"]}
        for contact in HELP_CONTACTS
    ]
    return error


class Guard:
    """The relay's rate limits and visitor blocks, all in memory.

    The defaults let a busy shared network (a shelter, a school, a mobile
    carrier's shared address) start 20 chats at once and one more every 30
    seconds. One conversation may send 60 messages at once and one more per
    second.
    """

    def __init__(
        self,
        *,
        block_seconds: float,
        starts_burst: int = 20,
        starts_per_seconds: float = 30.0,
        messages_burst: int = 60,
        messages_per_seconds: float = 1.0,
        sign_ins_burst: int = 5,
        sign_ins_per_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        day: Callable[[], str] = _utc_day,
    ) -> None:
        self.block_seconds = block_seconds
        self._clock = clock
        self._day = day
        self._key_day = ""
        self._key = b""
        self._starts = RateLimiter(
            burst=starts_burst, per_seconds=starts_per_seconds, clock=clock
        )
        self._messages = RateLimiter(
            burst=messages_burst, per_seconds=messages_per_seconds, clock=clock
        )
        self._sign_ins = RateLimiter(
            burst=sign_ins_burst, per_seconds=sign_ins_per_seconds, clock=clock
        )
        self._blocked: dict[str, float] = {}
        self._started_from: OrderedDict[str, str] = OrderedDict()

    def address_key(self, address: str | None) -> str:
        """Return today's keyed hash of a client address (hex, 32 digits).

        An unknown address (a Unix socket, a test client) gets one shared key.
        """
        day = self._day()
        if day != self._key_day:
            self._key_day = day
            self._key = secrets.token_bytes(32)
            self._starts.clear()
            self._blocked.clear()
            self._started_from.clear()
        digest = hmac.new(
            self._key, (address or "unknown").encode("utf-8"), hashlib.sha256
        )
        return digest.hexdigest()[:32]

    def check_start(self, address_key: str) -> None:
        """Raise ``ProtocolError`` (``blocked`` or ``rate_limited``) when a new
        conversation from this address hash must wait."""
        until = self._blocked.get(address_key)
        if until is not None:
            if self._clock() < until:
                raise refusal("blocked", _("This chat cannot be started right now."))
            del self._blocked[address_key]
        if not self._starts.allow(address_key):
            raise refusal(
                "rate_limited",
                _("Many chats were started from your network just now."),
            )

    def started(self, conversation_id: str, address_key: str) -> None:
        """Remember which address hash started a conversation, for ``block``."""
        self._started_from[conversation_id] = address_key
        while len(self._started_from) > MAX_KEYS:
            self._started_from.popitem(last=False)

    def check_message(self, conversation_id: str, client_id: str) -> None:
        """Raise ``rate_limited`` when a conversation sends faster than allowed."""
        if not self._messages.allow(conversation_id):
            raise refusal(
                "rate_limited",
                _(
                    "You are sending messages very fast. Please wait a moment and"
                    " send it again."
                ),
                client_id=client_id,
            )

    def block(self, conversation_id: str) -> bool:
        """Refuse new starts from the address hash that started a conversation.

        Lasts ``block_seconds`` or until the next UTC midnight, whichever comes
        first. Returns False when the hash is no longer known (a restart or a
        new day), so only the conversation itself is blocked.
        """
        address_key = self._started_from.pop(conversation_id, None)
        if address_key is None:
            return False
        self._blocked[address_key] = self._clock() + self.block_seconds
        return True

    def allow_sign_in(self, username: str) -> bool:
        """Take one sign-in attempt for an account; False means wait."""
        return self._sign_ins.allow(username.strip().lower())
