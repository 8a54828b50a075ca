"""Checks of ``VSO_*`` variable values shared by the settings modules.

``relay/settings.py`` imports ``relay/mailsettings.py``, so the code both use
lives here to avoid a circular import.
"""

from __future__ import annotations


class SettingsError(ValueError):
    """A ``VSO_*`` variable contains a value the relay cannot run with."""


def parse_int(name: str, raw: str, minimum: int, maximum: int) -> int:
    """Parse ``raw`` as an integer from ``minimum`` to ``maximum``, inclusive.

    Raises ``SettingsError`` that names the variable ``name`` and the valid range.
    """
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number.") from None
    if not minimum <= value <= maximum:
        raise SettingsError(
            f"{name}={value} is out of range; use {minimum} to {maximum}."
        )
    return value
