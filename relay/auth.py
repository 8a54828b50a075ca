"""Volunteer passwords, signed session cookies and CSRF tokens."""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from collections.abc import Mapping
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from itsdangerous import BadSignature, URLSafeTimedSerializer

from relay.settings import Settings

logger = logging.getLogger("relay.auth")

# argon2-cffi's defaults (argon2id, 64 MiB, 3 iterations, 4 lanes) are above the
# OWASP minimum of 19 MiB, 2 iterations and 1 lane.
_hasher = PasswordHasher()
# Verified against when the username is unknown, so that a sign-in attempt takes
# the same time whether or not the account exists.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))

MIN_PASSWORD_CHARS = 12
# Time from a correct password to the second factor, in seconds.
PENDING_MAX_AGE_SECONDS = 300
MAX_PASSWORD_CHARS = 1024


def hash_password(password: str) -> str:
    """Hash a password with argon2id; raises ``ValueError`` for a weak one."""
    check_password_length(password)
    return _hasher.hash(password)


def check_password_length(password: str) -> None:
    """Raise ``ValueError`` unless the password has an allowed length."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise ValueError(
            f"The password has {len(password)} characters; use at least"
            f" {MIN_PASSWORD_CHARS}."
        )
    if len(password) > MAX_PASSWORD_CHARS:
        raise ValueError(
            f"The password is longer than {MAX_PASSWORD_CHARS} characters."
        )


def verify_password(password_hash: str | None, password: str) -> bool:
    """Check a password against a stored hash, in constant time per hash."""
    if len(password) > MAX_PASSWORD_CHARS:
        return False
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and (
            password_hash is not None
        )
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


# Each check takes about 64 MiB and a third of a second of CPU, so at most two
# run at once, in threads, and the event loop keeps serving chats meanwhile.
_hash_slots = asyncio.Semaphore(2)


async def verify_password_async(password_hash: str | None, password: str) -> bool:
    """Run ``verify_password`` in a worker thread, two at a time at most."""
    async with _hash_slots:
        return await asyncio.to_thread(verify_password, password_hash, password)


async def hash_password_async(password: str) -> str:
    """Run ``hash_password`` in a worker thread, two at a time at most."""
    async with _hash_slots:
        return await asyncio.to_thread(hash_password, password)


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


class Signer:
    """Signs session ids into cookies and derives CSRF tokens from them."""

    def __init__(self, settings: Settings) -> None:
        self._sessions = URLSafeTimedSerializer(settings.secret_key, salt="vso-session")
        self._csrf = URLSafeTimedSerializer(settings.secret_key, salt="vso-csrf")
        self._pending = URLSafeTimedSerializer(settings.secret_key, salt="vso-2fa")
        self.max_age = settings.session_max_age_seconds
        self.secure = settings.secure
        # Browsers accept the __Host- prefix only with Secure, so only over HTTPS.
        self.session_cookie = "__Host-vso_session" if settings.secure else "vso_session"
        self.login_cookie = "__Host-vso_login" if settings.secure else "vso_login"
        self.pending_cookie = "__Host-vso_pending" if settings.secure else "vso_pending"

    def sign_session(self, session_id: str) -> str:
        return self._sessions.dumps(session_id)

    def unsign_session(self, cookie: str | None) -> str | None:
        """Return the session id in a cookie, or None if forged or expired."""
        if not cookie:
            return None
        try:
            value = self._sessions.loads(cookie, max_age=self.max_age)
        except BadSignature:
            return None
        return value if isinstance(value, str) else None

    def session_expires_at(self, cookie: str | None) -> float:
        """Return when a session cookie stops being valid, as Unix time.

        Returns 0 for a forged or expired cookie. A socket checks the signature
        once with this and then only the clock on each frame.
        """
        if not cookie:
            return 0.0
        try:
            value, signed_at = self._sessions.loads(
                cookie, max_age=self.max_age, return_timestamp=True
            )
        except BadSignature:
            return 0.0
        if not isinstance(value, str):
            return 0.0
        return float(signed_at.timestamp()) + self.max_age

    def sign_pending(self, pending: dict[str, Any]) -> str:
        """Sign the state of a sign-in that waits for its second factor."""
        return self._pending.dumps(pending)

    def unsign_pending(self, cookie: str | None) -> dict[str, Any] | None:
        """Return a pending sign-in's state, or None if forged or over
        ``PENDING_MAX_AGE_SECONDS`` old."""
        if not cookie:
            return None
        try:
            value = self._pending.loads(cookie, max_age=PENDING_MAX_AGE_SECONDS)
        except BadSignature:
            return None
        return value if isinstance(value, dict) else None

    def csrf_token(self, binding: str) -> str:
        """Return a CSRF token bound to a session id or a sign-in nonce."""
        return self._csrf.dumps(binding)

    def check_csrf(self, token: str | None, binding: str | None) -> bool:
        """Return True when ``token`` was issued for ``binding`` and is not expired."""
        if not token or not binding:
            return False
        try:
            value = self._csrf.loads(token, max_age=self.max_age)
        except BadSignature:
            return False
        return isinstance(value, str) and hmac.compare_digest(value, binding)


def same_origin_request(
    headers: Mapping[str, str], own_origins: frozenset[str]
) -> bool:
    """Reject cross-site form posts by Fetch Metadata, else by Origin.

    Under ``Referrer-Policy: no-referrer`` browsers send ``Origin: null`` even on
    same-origin posts, so ``Sec-Fetch-Site`` decides when present. Browsers that
    send neither header fall back to the CSRF token alone.
    """
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site in ("same-origin", "none")
    origin = headers.get("origin")
    return origin is None or origin == "null" or origin in own_origins


def new_session_id() -> str:
    return secrets.token_urlsafe(32)
