"""Reply codes: the only key a visitor gets to a message they left.

A code is 8 words from the BIP-39 English list of 2,048 words, so it carries
8 x 11 = 88 bits of entropy. Words were chosen over base32 because they are
easier to write down, read back and say on the phone without mixing up
characters, and because the first four letters of every word on the list are
unique, so a code with a misspelt word ending still reads correctly. The
relay stores only an HMAC-SHA256 of the code under the service's secret key:
the code can be found again, but a copy of the database alone cannot test
guesses.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from mnemonic import Mnemonic

WORDS = 8
# Longer input than any code with separators is not worth reading.
MAX_INPUT_CHARS = 200

_WORDLIST: tuple[str, ...] = tuple(Mnemonic("english").wordlist)
_BY_PREFIX: dict[str, str] = {word[:4]: word for word in _WORDLIST}
_SEPARATORS = re.compile(r"[^a-z]+")


def new_reply_code() -> str:
    """Return a new random code: 8 words separated by spaces."""
    return " ".join(secrets.choice(_WORDLIST) for _ in range(WORDS))


def normalise_reply_code(text: str) -> str | None:
    """Return the code in its stored form, or None when it cannot be one.

    Case, punctuation, spaces and line breaks between the words do not matter,
    and each word is recognised by its first four letters (all of a shorter
    word).
    """
    if len(text) > MAX_INPUT_CHARS:
        return None
    parts = [part for part in _SEPARATORS.split(text.lower()) if part]
    if len(parts) != WORDS:
        return None
    words = []
    for part in parts:
        # A part shorter than four letters matches only a word that short.
        word = _BY_PREFIX.get(part[:4])
        if word is None:
            return None
        words.append(word)
    return " ".join(words)


def hash_reply_code(secret_key: str, code: str) -> str:
    """Return the keyed hash (hex HMAC-SHA256) stored for a normalised code."""
    return hmac.new(
        secret_key.encode("utf-8"), f"reply-code:{code}".encode(), hashlib.sha256
    ).hexdigest()
