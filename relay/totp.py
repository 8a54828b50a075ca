"""Second factor for volunteer sign-in: TOTP (RFC 6238) and recovery codes.

Codes are 6 digits over 30-second steps, and one step either side is accepted
for clock drift. The store rejects a step at or below the last one used, so a
code works once. Recovery codes are random, shown once, and stored as SHA-256
hashes; each works once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

import pyotp
import segno

ISSUER = "Victim Support Online"
STEP_SECONDS = 30
DRIFT_STEPS = 1
RECOVERY_CODE_COUNT = 10
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i look-alikes


def new_secret() -> str:
    """Return a new random base32 secret of 160 bits."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, username: str) -> str:
    """Return the ``otpauth://`` URI that authenticator apps read from the QR code."""
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=ISSUER)


def qr_svg(uri: str) -> str:
    """Return the QR code of ``uri`` as an inline SVG element, drawn on the server."""
    svg: str = segno.make(uri, error="m").svg_inline(
        scale=4, dark="#000", light="#fff", omitsize=False
    )
    return svg


def matching_step(secret: str, code: str, now: float | None = None) -> int | None:
    """Return the time step whose code equals ``code``, or None.

    Accepts ``DRIFT_STEPS`` steps before and after the current one. The caller
    must record the step and reject it, or any earlier one, next time.
    """
    digits = code.replace(" ", "").strip()
    if len(digits) != 6 or not digits.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    current = int((time.time() if now is None else now) // STEP_SECONDS)
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.at(step * STEP_SECONDS), digits):
            return step
    return None


def new_recovery_codes() -> list[str]:
    """Return ``RECOVERY_CODE_COUNT`` new codes such as ``k7qm-x3rt-9wbn``."""
    codes = []
    for _ in range(RECOVERY_CODE_COUNT):
        characters = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(12))
        codes.append("-".join(characters[i : i + 4] for i in range(0, 12, 4)))
    return codes


def hash_recovery_code(code: str) -> str:
    """Return the stored form of a recovery code, ignoring case, spaces and dashes."""
    normalised = "".join(code.lower().split()).replace("-", "")
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()
