"""Tests of ``relay.crypto``: sealing, opening, key rotation and key files."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.crypto import DataCipher, DecryptionError, load_cipher, new_key_text

KEY = new_key_text()
OTHER_KEY = new_key_text()


@given(st.text())
def test_cipher_round_trip(text: str) -> None:
    cipher = DataCipher.from_text(KEY)

    assert cipher.decrypt(cipher.encrypt(text, "message:c:1"), "message:c:1") == text


def test_cipher_output_hides_text() -> None:
    sealed = DataCipher.from_text(KEY).encrypt("my address is 5 Main St", "ctx")

    assert "Main" not in sealed
    assert sealed.startswith("vso1:")


def test_cipher_same_text_differs_each_time() -> None:
    cipher = DataCipher.from_text(KEY)

    assert cipher.encrypt("same", "ctx") != cipher.encrypt("same", "ctx")


def test_cipher_other_context_rejected() -> None:
    cipher = DataCipher.from_text(KEY)
    sealed = cipher.encrypt("moved row", "message:c:1")

    with pytest.raises(DecryptionError):
        cipher.decrypt(sealed, "message:c:2")


def test_cipher_tampered_value_rejected() -> None:
    cipher = DataCipher.from_text(KEY)
    sealed = cipher.encrypt("text", "ctx")
    # A character inside the base64 text carries six bits of the ciphertext;
    # the last ones may only carry padding bits that decoding ignores.
    middle = len(sealed) // 2 + len(sealed) // 4
    tampered = (
        sealed[:middle] + ("A" if sealed[middle] != "A" else "B") + sealed[middle + 1 :]
    )

    with pytest.raises(DecryptionError):
        cipher.decrypt(tampered, "ctx")


def test_cipher_unknown_key_names_it() -> None:
    sealed = DataCipher.from_text(OTHER_KEY).encrypt("text", "ctx")
    cipher = DataCipher.from_text(KEY)

    with pytest.raises(DecryptionError, match="not configured"):
        cipher.decrypt(sealed, "ctx")


def test_cipher_old_key_still_opens() -> None:
    old = DataCipher.from_text(OTHER_KEY)
    rotated = DataCipher.from_text(f"{KEY}\n{OTHER_KEY}")
    sealed = old.encrypt("before", "ctx")

    assert rotated.decrypt(sealed, "ctx") == "before"
    assert not rotated.is_current(sealed)
    assert rotated.is_current(rotated.encrypt("after", "ctx"))


@pytest.mark.parametrize("text", ["", "not base64!", "c2hvcnQ"])
def test_cipher_invalid_key_text(text: str) -> None:
    with pytest.raises(ValueError):
        DataCipher.from_text(text)


def test_load_cipher_generates_private_file(tmp_path: Path) -> None:
    database = tmp_path / "var" / "vso.sqlite3"

    first = load_cipher("", None, database)
    second = load_cipher("", None, database)
    key_file = tmp_path / "var" / "data_key"

    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert first.current_key_id == second.current_key_id


def test_load_cipher_variable_wins_over_file(tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text(OTHER_KEY + "\n")

    cipher = load_cipher(KEY, key_file, tmp_path / "db")

    assert cipher.current_key_id == DataCipher.from_text(KEY).current_key_id


def test_load_cipher_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="missing-keys"):
        load_cipher("", tmp_path / "missing-keys", tmp_path / "db")
