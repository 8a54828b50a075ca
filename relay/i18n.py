"""Translation of visitor-facing and dashboard text.

Templates call ``_()`` and ``ngettext()``; Python code imports ``gettext`` and
``ngettext`` from here. The language of the current request lives in a context
variable, so one relay serves several languages at once. ``LanguageMiddleware``
sets it for every request and WebSocket. Visitor routes that know their site
then call ``activate()`` with the visitor's choice or the site's default.

Catalogues live in ``relay/locale/LANG/LC_MESSAGES/messages.po``. ``make
install`` compiles them to ``.mo`` files. A ``.mo`` that is missing or older
than its ``.po`` is replaced by compiling the ``.po`` in memory when the
language is first used, so a corrected translation takes effect at the next
start without a build step. ``docs/translations.md``
explains how to add or correct one.
"""

from __future__ import annotations

import contextvars
import functools
import gettext as _gettext
import io
import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_datetime as _format_datetime
from babel.dates import format_time as _format_time
from babel.messages.extract import extract
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations
from starlette.datastructures import Headers, QueryParams
from starlette.types import ASGIApp, Receive, Scope, Send

logger = logging.getLogger("relay.i18n")

DEFAULT_LANGUAGE = "en"
# Each language the relay offers, named in itself, as the language switch and
# the site settings show it.
LANGUAGES: dict[str, str] = {"en": "English", "mt": "Malti"}
# Right-to-left languages get dir="rtl" on their pages. None is offered yet.
RTL_LANGUAGES = frozenset({"ar", "fa", "he", "ur"})
LOCALE_DIR = Path(__file__).parent / "locale"
DOMAIN = "messages"
# The query parameter that carries a visitor's language choice.
LANGUAGE_PARAMETER = "lang"
# Entries of an Accept-Language header beyond this many are ignored.
MAX_ACCEPTED_LANGUAGES = 20

_current_language: contextvars.ContextVar[str] = contextvars.ContextVar(
    "language", default=DEFAULT_LANGUAGE
)


def N_(message: str) -> str:
    """Mark ``message`` for extraction and return it untranslated.

    For texts defined at import time (tables of messages) and translated with
    ``gettext`` when a request uses them.
    """
    return message


def supported_language(value: str | None) -> str | None:
    """Return ``value`` when it names an offered language, else None."""
    if value and value in LANGUAGES:
        return value
    return None


def text_direction(language: str) -> str:
    """Return ``rtl`` or ``ltr``, the ``dir`` attribute a page in ``language`` needs."""
    return "rtl" if language in RTL_LANGUAGES else "ltr"


def current_language() -> str:
    """Return the language of the current request or WebSocket."""
    return _current_language.get()


def activate(language: str) -> None:
    """Switch the rest of the current request or WebSocket to ``language``.

    Raises ``ValueError`` for a language the relay does not offer.
    """
    if language not in LANGUAGES:
        raise ValueError(
            f"{language!r} is not an offered language; use one of"
            f" {', '.join(sorted(LANGUAGES))}."
        )
    _current_language.set(language)


def load_translations(
    language: str, locale_dir: Path = LOCALE_DIR
) -> _gettext.NullTranslations:
    """Return the compiled catalogue of ``language`` from ``locale_dir``.

    Reads the ``.mo`` when it is at least as new as its ``.po``; otherwise
    compiles the ``.po`` in memory. An empty translation
    falls back to the English message id, so English needs no catalogue.
    """
    folder = locale_dir / language / "LC_MESSAGES"
    po_path = folder / f"{DOMAIN}.po"
    mo_path = folder / f"{DOMAIN}.mo"
    if not po_path.exists():
        if language != DEFAULT_LANGUAGE:
            logger.warning("no catalogue for language %s at %s", language, po_path)
        return _gettext.NullTranslations()
    if mo_path.exists() and mo_path.stat().st_mtime >= po_path.stat().st_mtime:
        with mo_path.open("rb") as file:
            return Translations(file, domain=DOMAIN)
    # A plain pip install ships the .po files only; compiling them takes
    # milliseconds, so this is the normal path there and not a fault.
    logger.info(
        "compiled %s in memory because %s is missing or older", po_path, mo_path.name
    )
    return Translations(io.BytesIO(compile_catalogue(po_path)), domain=DOMAIN)


def compile_catalogue(po_path: Path) -> bytes:
    """Return the ``.mo`` bytes of a ``.po`` file; fuzzy entries are left out."""
    with po_path.open("rb") as file:
        catalogue = read_po(file)
    buffer = io.BytesIO()
    write_mo(buffer, catalogue, use_fuzzy=False)
    return buffer.getvalue()


@functools.cache
def _translations(language: str) -> _gettext.NullTranslations:
    return load_translations(language)


def translations(language: str | None = None) -> _gettext.NullTranslations:
    """Return the catalogue of ``language``, by default the current one."""
    return _translations(language or current_language())


def gettext(message: str) -> str:
    """Return ``message`` in the language of the current request."""
    return translations().gettext(message)


def ngettext(singular: str, plural: str, count: int) -> str:
    """Return the singular or plural form that ``count`` needs."""
    return translations().ngettext(singular, plural, count)


def translate_all(messages: Iterable[str]) -> dict[str, str]:
    """Return the message ids whose translation differs, with the translation.

    Scripts receive these tables in a JSON block of their page, keyed by the
    English text they pass to their own ``_()``, and show the English text for
    a missing key, so English pages carry an empty table.
    """
    translated = {message: gettext(message) for message in messages}
    return {message: text for message, text in translated.items() if text != message}


def language_names() -> Mapping[str, str]:
    """Return each offered language's name in the current language."""
    locale = Locale.parse(current_language())
    return {
        code: Locale.parse(code).get_display_name(locale) or code for code in LANGUAGES
    }


def format_time(moment: datetime | str, time_zone: str) -> str:
    """Format a time of day in the current language, e.g. ``14:05``.

    ``moment`` is an aware datetime or the store's ISO 8601 UTC text.
    """
    return _format_time(
        _as_datetime(moment),
        format="short",
        tzinfo=ZoneInfo(time_zone),
        locale=current_language(),
    )


def format_datetime(moment: datetime | str, time_zone: str) -> str:
    """Format a date and time in the current language, medium length."""
    return _format_datetime(
        _as_datetime(moment),
        format="medium",
        tzinfo=ZoneInfo(time_zone),
        locale=current_language(),
    )


def _as_datetime(moment: datetime | str) -> datetime:
    if isinstance(moment, datetime):
        return moment
    return datetime.fromisoformat(moment.replace("Z", "+00:00"))


def accepted_language(header: str) -> str | None:
    """Return the offered language an ``Accept-Language`` header prefers most.

    Returns None when the header names none of them. Malformed entries are
    skipped, and ``q=0`` means "not this one".
    """
    ranked: list[tuple[float, int, str]] = []
    for index, entry in enumerate(header.split(",")[:MAX_ACCEPTED_LANGUAGES]):
        tag, _, parameters = entry.strip().partition(";")
        quality = 1.0
        name, _, value = parameters.strip().partition("=")
        if name.strip() == "q":
            try:
                quality = float(value)
            except ValueError:
                continue
        language = tag.strip().split("-")[0].lower()
        if quality > 0 and language in LANGUAGES:
            ranked.append((-quality, index, language))
    return min(ranked)[2] if ranked else None


class LanguageMiddleware:
    """Set the language of each HTTP request and WebSocket from its ``lang``.

    A request without a valid ``lang`` query parameter gets the default
    language, so nothing carries over from an earlier request. Visitor routes
    then apply the site's default. Staff pages under ``/dashboard`` follow the
    browser's ``Accept-Language`` instead, because staff have no site and no
    language links. The setting is reset when the request ends.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        query = QueryParams(scope.get("query_string", b""))
        language = supported_language(query.get(LANGUAGE_PARAMETER))
        if language is None and scope["path"].startswith("/dashboard"):
            language = accepted_language(
                Headers(scope=scope).get("accept-language", "")
            )
        token = _current_language.set(language or DEFAULT_LANGUAGE)
        try:
            await self.app(scope, receive, send)
        finally:
            _current_language.reset(token)


@functools.cache
def script_messages(path: Path) -> tuple[str, ...]:
    """Return the message ids a script passes to its ``_()``, in order.

    The same extraction ``make messages`` runs, so the page hands a script
    exactly the texts it can ask for.
    """
    with path.open("rb") as file:
        found = extract(
            "javascript", file, keywords={"_": None}, comment_tags=(), options={}
        )
        messages = [message for _, message, _, _ in found]
    return tuple(dict.fromkeys(m for m in messages if isinstance(m, str)))


def script_texts(path: Path) -> dict[str, str]:
    """Return the translations a script needs, for its page's JSON block."""
    return translate_all(script_messages(path))
