"""Encryption at rest for conversation text, with AES-256-GCM.

A stored value reads ``vso1:KEY_ID:DATA``: ``KEY_ID`` names the key that sealed
it, and ``DATA`` is base64url of a 12-byte random nonce followed by the
ciphertext and its tag. The caller's context (such as a conversation id and
sequence number) is bound in as associated data, so a value copied to another
row does not decrypt. Keys live outside the database: in ``VSO_DATA_KEY``,
in the file ``VSO_DATA_KEY_FILE`` names, or in ``data_key`` beside the database.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

logger = logging.getLogger("relay.crypto")

PREFIX = "vso1"
KEY_BYTES = 32
NONCE_BYTES = 12
_KEY_SEPARATORS = re.compile(r"[\s,]+")


class DecryptionError(Exception):
    """A stored value cannot be decrypted: unknown key, damaged, or moved."""


def new_key_text() -> str:
    """Return a new random key as base64url text, as key files hold it."""
    return base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def _decode_key(text: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("A data key is not valid base64url text.") from None
    if len(key) != KEY_BYTES:
        raise ValueError(
            f"A data key decodes to {len(key)} bytes; it must be {KEY_BYTES}."
            " Generate one with `vso new-data-key`."
        )
    return key


def key_id(key: bytes) -> str:
    """Return the short public name of a key: 8 hex digits of its SHA-256."""
    return hashlib.sha256(key).hexdigest()[:8]


class DataCipher:
    """Seals text with the current key and opens it with any known key.

    The first key is current: new values are sealed with it. The others only
    open values sealed before a rotation.
    """

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise ValueError("At least one data key is needed.")
        self._keys = {key_id(key): AESGCM(key) for key in keys}
        self.current_key_id = key_id(keys[0])

    @classmethod
    def from_text(cls, text: str) -> DataCipher:
        """Build a cipher from keys separated by white space or commas.

        Raises ``ValueError`` naming the problem when a key is malformed.
        """
        parts = [part for part in _KEY_SEPARATORS.split(text.strip()) if part]
        return cls([_decode_key(part) for part in parts])

    def encrypt(self, plaintext: str, context: str) -> str:
        """Return ``plaintext`` sealed with the current key, bound to ``context``."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._keys[self.current_key_id].encrypt(
            nonce, plaintext.encode("utf-8"), context.encode("utf-8")
        )
        data = base64.urlsafe_b64encode(nonce + sealed).decode("ascii")
        return f"{PREFIX}:{self.current_key_id}:{data}"

    def decrypt(self, stored: str, context: str) -> str:
        """Return the text sealed in ``stored``; raises ``DecryptionError``."""
        prefix, _, rest = stored.partition(":")
        stored_key_id, _, data = rest.partition(":")
        if prefix != PREFIX or not data:
            raise DecryptionError("The value is not in the vso1 format.")
        cipher = self._keys.get(stored_key_id)
        if cipher is None:
            raise DecryptionError(
                f"The value was sealed with key {stored_key_id}, which is not"
                " configured; add it back to VSO_DATA_KEY or the key file."
            )
        try:
            raw = base64.urlsafe_b64decode(data)
            opened = cipher.decrypt(
                raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode("utf-8")
            )
        except (binascii.Error, ValueError, InvalidTag):
            raise DecryptionError(
                "The value is damaged or belongs to another row."
            ) from None
        return opened.decode("utf-8")

    def has_key(self, stored_key_id: str) -> bool:
        """Return True when one of the configured keys has ``stored_key_id``."""
        return stored_key_id in self._keys

    @staticmethod
    def sealing_key_id(stored: str) -> str | None:
        """Return the id of the key that sealed ``stored``, None if not sealed."""
        prefix, _, rest = stored.partition(":")
        stored_key_id, _, data = rest.partition(":")
        return stored_key_id if prefix == PREFIX and data else None

    def is_current(self, stored: str) -> bool:
        """Return True when ``stored`` was sealed with the current key."""
        return stored.startswith(f"{PREFIX}:{self.current_key_id}:")


def load_cipher(
    data_key: str, data_key_file: Path | None, database: Path
) -> DataCipher:
    """Build the cipher from the key variable, the key file, or a generated file.

    ``data_key`` wins over ``data_key_file``. With neither, the keys are read from
    ``data_key`` beside the database, which is created with one new key and a
    warning on first use. Raises ``ValueError`` for a missing or malformed key.
    """
    if data_key:
        return DataCipher.from_text(data_key)
    path = data_key_file or database.parent / "data_key"
    if data_key_file is None and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(new_key_text() + "\n")
        logger.warning(
            "VSO_DATA_KEY is not set; generated a data key into %s. Keep a copy"
            " apart from database backups: without it no message can be read.",
            path,
        )
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"Cannot read the data key file {path}: {error}") from None
    try:
        return DataCipher.from_text(text)
    except ValueError as error:
        raise ValueError(f"The data key file {path} is invalid: {error}") from None
