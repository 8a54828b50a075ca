"""Tests of ``relay.auth``: the password hash meets the OWASP argon2id minimum."""

from __future__ import annotations

import re

from relay.auth import hash_password, verify_password

# OWASP Password Storage Cheat Sheet: argon2id, at least 19 MiB and 2 iterations.
MIN_MEMORY_KIB = 19 * 1024
MIN_ITERATIONS = 2


def test_password_hash_is_argon2id_above_minimum() -> None:
    encoded = hash_password("correct horse battery")
    match = re.match(r"\$(argon2\w+)\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$", encoded)

    assert match is not None, encoded
    assert match.group(1) == "argon2id"
    assert int(match.group(2)) >= MIN_MEMORY_KIB
    assert int(match.group(3)) >= MIN_ITERATIONS


def test_password_hash_verifies() -> None:
    encoded = hash_password("correct horse battery")

    assert verify_password(encoded, "correct horse battery")
    assert not verify_password(encoded, "wrong horse battery")
