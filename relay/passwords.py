"""Checks on a new staff password beyond its length: common and guessable ones.

The list is short and hand-made: common choices that pass the length check
(number runs, "password" with digits, keyboard walks, the service's own words)
and the patterns behind them. It catches the obvious choices; it is no
substitute for checking against a full breached-password corpus.
"""

from __future__ import annotations

from relay.auth import check_password_length

# Lowercased. Each entry is at least 12 characters, because shorter ones fail
# the length check first.
COMMON_PASSWORDS = frozenset(
    {
        "123456789012",
        "1234567890123",
        "12345678901234",
        "123456789123",
        "1q2w3e4r5t6y",
        "1qaz2wsx3edc",
        "abcdefghijkl",
        "abc123abc123",
        "administrator",
        "asdfghjklqwe",
        "changeme1234",
        "iloveyou1234",
        "letmein12345",
        "monkey123456",
        "password1234",
        "password12345",
        "password123!",
        "password!234",
        "passwordpassword",
        "passw0rd1234",
        "p@ssw0rd1234",
        "p@ssword1234",
        "qazwsxedcrfv",
        "qwerty123456",
        "qwertyqwerty",
        "qwertyuiop12",
        "qwertyuiopas",
        "welcome12345",
        "welcome123456",
        "trustno1trustno1",
        "football1234",
        "sunshine1234",
        "princess1234",
        "baseball1234",
        "superman1234",
        "dragon123456",
        "master123456",
        "whatever1234",
        "correcthorsebatterystaple",
        "correct horse battery staple",
        "victimsupport",
        "victimsupport1",
        "victimsupport123",
        "victimsupportmalta",
        "volunteer123",
        "volunteer1234",
        "supportline179",
    }
)
# Runs people type without thinking: along the rows of a QWERTY keyboard (one
# row into the next), down its columns, and through the alphabet.
_KEYBOARD_RUNS = (
    "1234567890",
    "qwertyuiopasdfghjklzxcvbnm",
    "1qaz2wsx3edc4rfv5tgb6yhn7ujm8ik9ol0p",
    "abcdefghijklmnopqrstuvwxyz",
)


def check_new_password(password: str, *names: str) -> None:
    """Raise ``ValueError`` with a reason when ``password`` is too weak to set.

    Rejects passwords outside the length limits, ones on the built-in list of
    common passwords, runs of one character or of a keyboard row, and ones that
    contain any of ``names`` (the username or display name).
    """
    check_password_length(password)
    folded = password.casefold()
    if folded in COMMON_PASSWORDS or folded.strip("!?.0123456789") in COMMON_PASSWORDS:
        raise ValueError(
            "This password is on a list of common passwords; choose another."
        )
    if len(set(folded)) <= 3 or _is_sequence(folded):
        raise ValueError(
            "This password repeats characters or follows the keyboard; choose another."
        )
    for name in names:
        name = name.strip().casefold()
        if len(name) >= 3 and name in folded:
            raise ValueError("The password must not contain your name or username.")


def _is_sequence(text: str) -> bool:
    """Return True when ``text`` is a run along a keyboard row or the alphabet,
    forwards or backwards, possibly repeated."""
    for run in _KEYBOARD_RUNS:
        for source in (run * 3, run[::-1] * 3):
            if text in source:
                return True
    return False
