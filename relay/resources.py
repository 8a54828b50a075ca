"""The information hub's content: Markdown pages and the directory of services.

Staff edit the files under ``relay/content/`` without touching code.
``pages.toml`` lists the pages in order, ``<language>/<slug>.md`` contains each
page (a leading ``<!-- ... -->`` note for editors is not shown) and
``services.toml`` the directory. ``load_content`` reads and checks all of them
at start, and a malformed file raises ``ContentError`` naming the file and the
field. Markdown is rendered with markdown-it-py with HTML in the source switched
off, so the rendered pages contain only markup the renderer writes.
"""

from __future__ import annotations

import datetime
import logging
import re
import tomllib
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.token import Token
from markupsafe import Markup

from relay import i18n

logger = logging.getLogger("relay.resources")

CONTENT_DIR = Path(__file__).parent / "content"
LANGUAGES = ("en", "mt")
LANGUAGE_CODE = re.compile(r"[a-z]{2}")
ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
PHONE_PATTERN = re.compile(r"\+?[0-9][0-9 ]{1,18}[0-9]")
EMAIL_PATTERN = re.compile(r"[^@\s<>\"]{1,64}@[A-Za-z0-9.-]{1,190}\.[A-Za-z]{2,}")
# Link targets a page may use: the hub's own pages and the chat, web addresses
# over HTTPS, telephone numbers and e-mail addresses.
LINK_PATTERN = re.compile(
    r"(/[A-Za-z0-9/_?=&.-]*|https://\S+|tel:\+?[0-9]+|mailto:\S+)"
)
MAX_TEXT_CHARS = 400
MAX_PAGE_BYTES = 200_000
SEARCH_LIMIT = 10


class ContentError(ValueError):
    """A content file is missing or malformed; the message names file and field."""


@dataclass(frozen=True)
class Section:
    """A second-level heading of a page, with the anchor the renderer gave it."""

    anchor: str
    title: str


@dataclass(frozen=True)
class Page:
    """One hub page in one language, rendered to safe HTML."""

    slug: str
    language: str
    title: str
    summary: str
    html: Markup
    sections: tuple[Section, ...]
    while_waiting: bool


@dataclass(frozen=True)
class Service:
    """An entry of the directory of support services.

    ``name``, ``purpose`` and ``hours`` map each language to its text.
    ``languages`` lists the languages the service speaks, when known, and
    ``checked`` is None when nobody has checked the details yet.
    """

    id: str
    name: dict[str, str]
    purpose: dict[str, str]
    phone: str
    email: str
    hours: dict[str, str]
    website: str
    languages: tuple[str, ...]
    source: str
    checked: datetime.date | None

    def is_stale(self, today: datetime.date, max_age_days: int) -> bool:
        """Return True when the details were never checked or are too old."""
        if self.checked is None:
            return True
        return (today - self.checked).days > max_age_days


@dataclass(frozen=True)
class SearchResult:
    """One match of a search: a service or a page, in the searched language."""

    id: str
    kind: str
    title: str
    summary: str


@dataclass(frozen=True)
class Content:
    """Every page in every language and the directory, checked and rendered."""

    pages: dict[str, dict[str, Page]]
    page_order: tuple[str, ...]
    services: tuple[Service, ...]
    directory_path: Path
    # The directory page's title and summary, by language.
    directory_title: dict[str, str]
    directory_summary: dict[str, str]

    def page(self, slug: str, language: str) -> Page | None:
        return self.pages.get(language, {}).get(slug)

    def pages_in(self, language: str) -> list[Page]:
        """Return the pages of one language in the order of ``pages.toml``."""
        return [self.pages[language][slug] for slug in self.page_order]

    def service(self, service_id: str) -> Service | None:
        for service in self.services:
            if service.id == service_id:
                return service
        return None

    def stale_services(self, today: datetime.date, max_age_days: int) -> list[Service]:
        """Return the services whose details are older than ``max_age_days``."""
        return [s for s in self.services if s.is_stale(today, max_age_days)]

    def search(self, query: str, language: str) -> list[SearchResult]:
        """Find services by name or purpose and pages by title or section.

        Every word of ``query`` must occur; case and accents are ignored, so
        "appogg" finds "appoġġ". Returns at most ``SEARCH_LIMIT`` results,
        services first.
        """
        words = fold_text(query).split()
        if not words or language not in LANGUAGES:
            return []
        results: list[SearchResult] = []
        for service in self.services:
            text = fold_text(f"{service.name[language]} {service.purpose[language]}")
            if all(word in text for word in words):
                results.append(
                    SearchResult(
                        service.id,
                        "service",
                        service.name[language],
                        service.purpose[language],
                    )
                )
        for page in self.pages_in(language):
            headings = " ".join(section.title for section in page.sections)
            if all(word in fold_text(f"{page.title} {headings}") for word in words):
                results.append(
                    SearchResult(page.slug, "page", page.title, page.summary)
                )
        return results[:SEARCH_LIMIT]

    def card(self, resource_id: str, language: str) -> dict[str, str] | None:
        """Return the resource card of a service or page, or None when unknown."""
        if language not in LANGUAGES:
            return None
        entry: Service | Page | None = self.service(resource_id) or self.page(
            resource_id, language
        )
        return None if entry is None else resource_card(entry, language)


def stale_report(
    content: Content, today: datetime.date | None, max_age_days: int
) -> list[str]:
    """Return one line per directory entry older than ``max_age_days``.

    ``today`` defaults to the current UTC date; tests pass a fixed one.
    """
    if today is None:
        today = datetime.datetime.now(datetime.UTC).date()
    lines = []
    for service in content.stale_services(today, max_age_days):
        if service.checked is None:
            when = "never checked"
        else:
            age = (today - service.checked).days
            when = f"last checked {service.checked.isoformat()}, {age} days ago"
        lines.append(f"{content.directory_path}: service {service.id!r}: {when}")
    return lines


def info_path(slug: str, language: str) -> str:
    """Return the path of a hub page in a language."""
    return f"/info/{slug}?lang={language}"


def resource_card(entry: Service | Page, language: str) -> dict[str, str]:
    """Return the card of a service or page: the fields the chat shows.

    The card contains ``id``, ``kind`` (``service`` or ``page``), ``name``,
    ``purpose``, ``phone``, ``email``, ``hours``, ``website`` and ``link`` (a
    path on this relay, for pages); an empty string means "not known". A page's
    language is its own, so ``language`` applies to services only.
    """
    if isinstance(entry, Page):
        return {
            "id": entry.slug,
            "kind": "page",
            "name": entry.title,
            "purpose": entry.summary,
            "phone": "",
            "email": "",
            "hours": "",
            "website": "",
            "link": info_path(entry.slug, entry.language),
        }
    return {
        "id": entry.id,
        "kind": "service",
        "name": entry.name[language],
        "purpose": entry.purpose[language],
        "phone": entry.phone,
        "email": entry.email,
        "hours": entry.hours[language],
        "website": entry.website,
        "link": "",
    }


def resource_as_text(entry: Service | Page, language: str, base_url: str = "") -> str:
    """Write a directory entry or hub page as plain text, for e-mail.

    ``base_url`` (such as ``https://chat.example.org``) turns a page's path into
    a full address. Raises ``KeyError`` for a language the content lacks.
    """
    return card_as_text(resource_card(entry, language), language, base_url)


def card_as_text(card: dict[str, str], language: str, base_url: str = "") -> str:
    """Write a resource card as plain text, one field a line.

    A message's body carries this text, which the chat without scripts and the
    transcript show. The labels are in ``language``, the card's, whatever the
    language of the volunteer who sends it.
    """
    _ = i18n.translations(language).gettext
    lines = [card["name"], card["purpose"]]
    labelled = (
        (_("Phone"), card.get("phone", "")),
        (_("E-mail"), card.get("email", "")),
        (_("Hours"), card.get("hours", "")),
        (_("Website"), card.get("website", "")),
    )
    lines.extend(f"{label}: {value}" for label, value in labelled if value)
    if card.get("link"):
        lines.append(f"{_('Read more')}: {base_url}{card['link']}")
    return "\n".join(line for line in lines if line)


_FOLDED = str.maketrans({"ħ": "h", "Ħ": "h", "ł": "l", "ø": "o", "ß": "ss"})


def fold_text(text: str) -> str:
    """Return ``text`` lowercased, without accents and apostrophes, for search."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_FOLDED))
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return bare.casefold().replace("'", "").replace("’", "")


# Loading and checking


def load_content(directory: Path = CONTENT_DIR) -> Content:
    """Read, check and render every content file under ``directory``.

    Raises ``ContentError`` naming the file and the field at the first problem.
    """
    order, waiting = _read_page_index(directory / "pages.toml")
    renderer = _markdown()
    pages: dict[str, dict[str, Page]] = {}
    for language in LANGUAGES:
        pages[language] = {}
        for slug in order:
            path = directory / language / f"{slug}.md"
            pages[language][slug] = _read_page(
                renderer, path, slug, language, slug in waiting
            )
    services_path = directory / "services.toml"
    services_data = _read_toml(services_path)
    services = _read_services(services_path, services_data)
    heading = services_data.get("directory")
    if not isinstance(heading, dict):
        raise ContentError(
            f"{services_path}: the [directory] table with the page's title and"
            " summary is missing."
        )
    where = f"{services_path}: [directory]"
    title = _translated(where, heading, "title", required=True)
    summary = _translated(where, heading, "summary", required=True)
    page_slugs = set(order)
    for service in services:
        if service.id in page_slugs:
            raise ContentError(
                f"{services_path}: service {service.id!r} has the id of a page;"
                " give it another id."
            )
    logger.info(
        "loaded %d hub pages in %d languages and %d directory entries from %s",
        len(order),
        len(LANGUAGES),
        len(services),
        directory,
    )
    return Content(pages, order, services, services_path, title, summary)


def log_stale_entries(content: Content, max_age_days: int) -> None:
    """Log a warning when directory entries are older than ``max_age_days``."""
    today = datetime.datetime.now(datetime.UTC).date()
    stale = content.stale_services(today, max_age_days)
    if stale:
        logger.warning(
            "%d directory entries were not checked in the last %d days: %s;"
            " run `vso content check`",
            len(stale),
            max_age_days,
            ", ".join(service.id for service in stale),
        )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise ContentError(f"{path}: the file is missing.") from None
    except tomllib.TOMLDecodeError as error:
        raise ContentError(f"{path}: invalid TOML: {error}.") from None


def _read_page_index(path: Path) -> tuple[tuple[str, ...], set[str]]:
    data = _read_toml(path)
    entries = data.get("page")
    if not isinstance(entries, list) or not entries:
        raise ContentError(f"{path}: field 'page' must list at least one [[page]].")
    order: list[str] = []
    waiting: set[str] = set()
    for number, entry in enumerate(entries, start=1):
        where = f"{path}: page {number}"
        slug = entry.get("slug") if isinstance(entry, dict) else None
        if not isinstance(slug, str) or not ID_PATTERN.fullmatch(slug):
            raise ContentError(
                f"{where}: field 'slug' must be lowercase letters, digits and"
                " hyphens, at most 40 characters."
            )
        if slug in order:
            raise ContentError(f"{where}: slug {slug!r} appears twice.")
        while_waiting = entry.get("while_waiting", False)
        if not isinstance(while_waiting, bool):
            raise ContentError(f"{where}: field 'while_waiting' must be true or false.")
        order.append(slug)
        if while_waiting:
            waiting.add(slug)
    return tuple(order), waiting


def _markdown() -> MarkdownIt:
    renderer = MarkdownIt("commonmark", {"html": False, "linkify": False})
    renderer.enable("table")
    return renderer


def _read_page(
    renderer: MarkdownIt, path: Path, slug: str, language: str, while_waiting: bool
) -> Page:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ContentError(
            f"{path}: the page is missing in language {language}."
        ) from None
    if len(raw) > MAX_PAGE_BYTES:
        raise ContentError(f"{path}: the page is over {MAX_PAGE_BYTES} bytes.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ContentError(f"{path}: invalid UTF-8: {error}.") from None
    tokens = renderer.parse(_without_header(text))
    title, summary, sections = _check_page_tokens(path, tokens)
    html = renderer.renderer.render(tokens, renderer.options, {})
    return Page(
        slug=slug,
        language=language,
        title=title,
        summary=summary,
        # markdown-it escapes all text and, with "html" off, all HTML in the
        # source, so the output contains only the renderer's own markup.
        html=Markup(html),  # noqa: S704
        sections=tuple(sections),
        while_waiting=while_waiting,
    )


def _without_header(text: str) -> str:
    """Remove a leading ``<!-- ... -->`` note for editors, which is not shown."""
    stripped = text.lstrip()
    if stripped.startswith("<!--"):
        end = stripped.find("-->")
        if end != -1:
            return stripped[end + 3 :]
    return text


def _inline_text(token: Token) -> str:
    return "".join(child.content for child in token.children or [] if child.content)


def _check_page_tokens(
    path: Path, tokens: list[Token]
) -> tuple[str, str, list[Section]]:
    """Check headings and links; return the title, summary and sections.

    A page starts with its one level-1 heading and a paragraph that summarises
    it. Headings never skip a level. Links must match ``LINK_PATTERN`` and get
    ``rel="noopener noreferrer"``. Second-level headings get an ``id`` for the
    table of contents.
    """
    if len(tokens) < 2 or tokens[0].type != "heading_open" or tokens[0].tag != "h1":
        raise ContentError(f"{path}: the page must start with a '# Title' line.")
    title = _inline_text(tokens[1])
    summary = ""
    for index in range(3, len(tokens) - 1):
        if tokens[index].type == "paragraph_open":
            summary = _inline_text(tokens[index + 1])
            break
    if not summary:
        raise ContentError(
            f"{path}: the title must be followed by a summary paragraph."
        )
    sections: list[Section] = []
    anchors: set[str] = set()
    level = 1
    for index, token in enumerate(tokens):
        if token.type == "heading_open":
            new_level = int(token.tag[1])
            if index > 0 and new_level == 1:
                raise ContentError(f"{path}: only the first line may be a '#' heading.")
            if new_level > level + 1:
                raise ContentError(
                    f"{path}: heading {_inline_text(tokens[index + 1])!r} skips"
                    f" from level {level} to level {new_level}."
                )
            level = new_level
            if new_level == 2:
                heading = _inline_text(tokens[index + 1])
                anchor = _anchor(heading, anchors)
                token.attrSet("id", anchor)
                sections.append(Section(anchor, heading))
        if token.type == "inline":
            for child in token.children or []:
                if child.type == "link_open":
                    href = str(child.attrGet("href") or "")
                    if not LINK_PATTERN.fullmatch(href):
                        raise ContentError(
                            f"{path}: link {href!r} is not allowed; use https://,"
                            " tel:, mailto: or a path starting with /."
                        )
                    child.attrSet("rel", "noopener noreferrer")
                if child.type == "image":
                    raise ContentError(f"{path}: images are not supported.")
    return title, summary, sections


def _anchor(heading: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", fold_text(heading)).strip("-")[:40] or "section"
    anchor = base
    number = 2
    while anchor in taken:
        anchor = f"{base}-{number}"
        number += 1
    taken.add(anchor)
    return anchor


def _read_services(path: Path, data: dict[str, Any]) -> tuple[Service, ...]:
    entries = data.get("service")
    if not isinstance(entries, list) or not entries:
        raise ContentError(
            f"{path}: field 'service' must list at least one [[service]]."
        )
    services: list[Service] = []
    seen: set[str] = set()
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            raise ContentError(f"{path}: service {number} is not a table.")
        service = _read_service(path, number, entry)
        if service.id in seen:
            raise ContentError(f"{path}: service {number}: id {service.id!r} is taken.")
        seen.add(service.id)
        services.append(service)
    return tuple(services)


_SERVICE_FIELDS = frozenset(
    {
        "id",
        "name",
        "purpose",
        "phone",
        "email",
        "hours",
        "website",
        "languages",
        "source",
        "checked",
    }
)


def _read_service(path: Path, number: int, entry: dict[str, Any]) -> Service:
    service_id = entry.get("id")
    label = f"{path}: service {number}"
    if not isinstance(service_id, str) or not ID_PATTERN.fullmatch(service_id):
        raise ContentError(
            f"{label}: field 'id' must be lowercase letters, digits and hyphens,"
            " at most 40 characters."
        )
    where = f"{path}: service {service_id!r}"
    unknown = sorted(set(entry) - _SERVICE_FIELDS)
    if unknown:
        raise ContentError(
            f"{where}: unknown field {unknown[0]!r}; the fields are"
            f" {', '.join(sorted(_SERVICE_FIELDS))}."
        )
    phone = _optional_text(where, entry, "phone")
    if phone and not PHONE_PATTERN.fullmatch(phone):
        raise ContentError(
            f"{where}: field 'phone' {phone!r} is not a phone number; use digits,"
            " spaces and an optional leading +."
        )
    email = _optional_text(where, entry, "email")
    if email and not EMAIL_PATTERN.fullmatch(email):
        raise ContentError(f"{where}: field 'email' {email!r} is not an address.")
    website = _optional_text(where, entry, "website")
    if website and not re.fullmatch(r"https://[A-Za-z0-9.-]+(/\S*)?", website):
        raise ContentError(
            f"{where}: field 'website' {website!r} must be an https:// address."
        )
    if not (phone or email or website):
        raise ContentError(
            f"{where}: give at least one of the fields 'phone', 'email' or 'website'."
        )
    languages = entry.get("languages", [])
    if not isinstance(languages, list) or not all(
        isinstance(code, str) and LANGUAGE_CODE.fullmatch(code) for code in languages
    ):
        raise ContentError(
            f"{where}: field 'languages' must list the languages the service"
            ' speaks as two-letter codes, such as ["en", "mt"].'
        )
    source = entry.get("source")
    if not isinstance(source, str) or not source.strip():
        raise ContentError(
            f"{where}: field 'source' is missing; say where the details come from."
        )
    checked = entry.get("checked")
    if checked is not None and (
        not isinstance(checked, datetime.date) or isinstance(checked, datetime.datetime)
    ):
        raise ContentError(
            f"{where}: field 'checked' must be a date such as 2026-01-31, or left"
            " out when nobody has checked the details."
        )
    return Service(
        id=service_id,
        name=_translated(where, entry, "name", required=True),
        purpose=_translated(where, entry, "purpose", required=True),
        phone=phone,
        email=email,
        hours=_translated(where, entry, "hours", required=False),
        website=website,
        languages=tuple(languages),
        source=source.strip(),
        checked=checked,
    )


def _optional_text(where: str, entry: dict[str, Any], name: str) -> str:
    value = entry.get(name, "")
    if not isinstance(value, str) or len(value) > MAX_TEXT_CHARS:
        raise ContentError(
            f"{where}: field {name!r} must be text of at most {MAX_TEXT_CHARS}"
            " characters."
        )
    return value.strip()


def _translated(
    where: str, entry: dict[str, Any], name: str, *, required: bool
) -> dict[str, str]:
    """Return a field given per language, such as ``name.en`` and ``name.mt``."""
    value = entry.get(name)
    if value is None and not required:
        return {language: "" for language in LANGUAGES}
    if not isinstance(value, dict):
        raise ContentError(
            f"{where}: field {name!r} must give the text in each language,"
            f" as {name}.en and {name}.mt."
        )
    texts: dict[str, str] = {}
    for language in LANGUAGES:
        text = value.get(language)
        if not isinstance(text, str) or not text.strip():
            raise ContentError(f"{where}: field '{name}.{language}' is missing.")
        if len(text) > MAX_TEXT_CHARS:
            raise ContentError(
                f"{where}: field '{name}.{language}' is over {MAX_TEXT_CHARS}"
                " characters."
            )
        texts[language] = text.strip()
    return texts
