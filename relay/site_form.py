"""Checks on a partner site's settings as an admin enters them in the dashboard.

Every field is checked and each problem is reported against its field, so that
the form can show all of them at once and keep what the admin typed.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from relay.i18n import gettext as _
from relay.sites import check_exit_url, normalise_origin

NAME_MAX_CHARS = 100
GREETING_MAX_CHARS = 300
MAX_ORIGINS = 20
ORIGINS_MAX_CHARS = 4000
# WCAG 2.1 success criterion 1.4.3 requires a contrast of at least 4.5:1 between
# normal text and its background. The brand colour is the background of white
# button text.
MIN_CONTRAST = 4.5
_COLOUR = re.compile(r"#[0-9a-f]{6}")


@dataclass
class SiteFields:
    """A site's settings as entered, with the problems found in each field."""

    name: str = ""
    origins_text: str = ""
    origins: list[str] = field(default_factory=list)
    greeting: str = ""
    brand_colour: str = ""
    exit_url: str = ""
    errors: dict[str, list[str]] = field(default_factory=dict)

    def add_error(self, name: str, message: str) -> None:
        self.errors.setdefault(name, []).append(message)


def parse_site_form(form: dict[str, str]) -> SiteFields:
    """Check the fields of the site form; the result's ``errors`` lists problems."""
    fields = SiteFields(
        name=form.get("name", "").strip(),
        origins_text=form.get("origins", ""),
        greeting=form.get("greeting", "").strip(),
        brand_colour=form.get("brand_colour", "").strip().lower(),
        exit_url=form.get("exit_url", "").strip(),
    )
    _check_name(fields)
    _check_origins(fields)
    _check_greeting(fields)
    _check_colour(fields)
    _check_exit(fields)
    return fields


def _has_control_characters(text: str, allowed: str = "") -> bool:
    return any(
        unicodedata.category(char) in ("Cc", "Cf") and char not in allowed
        for char in text
    )


def _check_name(fields: SiteFields) -> None:
    if not fields.name or len(fields.name) > NAME_MAX_CHARS:
        fields.add_error(
            "name",
            _("Enter a name of 1 to %(max)d characters.") % {"max": NAME_MAX_CHARS},
        )
    elif _has_control_characters(fields.name):
        fields.add_error("name", _("The name contains control characters."))


def _check_origins(fields: SiteFields) -> None:
    text = fields.origins_text
    if len(text) > ORIGINS_MAX_CHARS:
        fields.add_error(
            "origins",
            _("The list of origins is longer than %(max)d characters.")
            % {"max": ORIGINS_MAX_CHARS},
        )
        return
    entries = [entry for entry in re.split(r"[\s,]+", text) if entry]
    if not entries:
        fields.add_error(
            "origins",
            _("Enter at least one origin, such as https://www.example.org."),
        )
        return
    origins: set[str] = set()
    for entry in entries:
        try:
            origins.add(normalise_origin(entry))
        except ValueError as error:
            fields.add_error("origins", str(error))
    if len(origins) > MAX_ORIGINS:
        fields.add_error(
            "origins",
            _("Enter at most %(max)d origins.") % {"max": MAX_ORIGINS},
        )
    fields.origins = sorted(origins)


def _check_greeting(fields: SiteFields) -> None:
    if len(fields.greeting) > GREETING_MAX_CHARS:
        fields.add_error(
            "greeting",
            _("The greeting has %(count)d characters; use at most %(max)d.")
            % {"count": len(fields.greeting), "max": GREETING_MAX_CHARS},
        )
    elif _has_control_characters(fields.greeting, allowed="\r\n"):
        fields.add_error("greeting", _("The greeting contains control characters."))
    fields.greeting = re.sub(r"\s+", " ", fields.greeting)


def _check_colour(fields: SiteFields) -> None:
    colour = fields.brand_colour
    if not colour:
        return
    if not _COLOUR.fullmatch(colour):
        fields.add_error(
            "brand_colour",
            _(
                "%(value)r is not a colour; write it as # and six hex digits, such as"
                " #1d5b79."
            )
            % {"value": colour[:20]},
        )
        return
    ratio = contrast_with_white(colour)
    if ratio < MIN_CONTRAST:
        fields.add_error(
            "brand_colour",
            _(
                "White text on %(colour)s has a contrast of %(ratio).1f:1; choose a"
                " darker colour with at least %(min).1f:1."
            )
            % {"colour": colour, "ratio": ratio, "min": MIN_CONTRAST},
        )


def _check_exit(fields: SiteFields) -> None:
    try:
        url = check_exit_url(fields.exit_url)
    except ValueError as error:
        fields.add_error("exit_url", str(error))
        return
    if urlsplit(url).scheme != "https":
        fields.add_error(
            "exit_url",
            _("The Quick exit address must start with https://."),
        )
        return
    fields.exit_url = url


def contrast_with_white(colour: str) -> float:
    """Return the WCAG 2.1 contrast ratio of white against ``#rrggbb``."""
    return 1.05 / (relative_luminance(colour) + 0.05)


def relative_luminance(colour: str) -> float:
    """Return the WCAG 2.1 relative luminance of ``#rrggbb``, 0 (black) to 1."""
    channels = []
    for start in (1, 3, 5):
        value = int(colour[start : start + 2], 16) / 255
        if value <= 0.04045:
            channels.append(value / 12.92)
        else:
            channels.append(((value + 0.055) / 1.055) ** 2.4)
    red, green, blue = channels
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def darker(colour: str, factor: float = 0.8) -> str:
    """Return ``#rrggbb`` with each channel scaled by ``factor``, for hover."""
    parts = [int(colour[start : start + 2], 16) for start in (1, 3, 5)]
    return "#" + "".join(f"{round(part * factor):02x}" for part in parts)
