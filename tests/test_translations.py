"""Every visitor-facing text has a Maltese translation with the same placeholders.

The texts are extracted from the sources when the test runs, with Babel's
extraction API, so a text added later fails here until the Maltese catalogue
has it. Visitor-facing sources, as docs/translations.md lists them:

- everything in ``widget/``: Python, templates (the chat, no-script, safety,
  transcript, error, message and hub pages) and scripts;
- the scripts in ``relay/static/`` that visitor pages load, and any template
  under ``relay/templates/`` (e-mail texts);
- the relay modules in ``VISITOR_MODULES``, whose texts reach visitors: the
  rate limits' refusals, the embed snippet, e-mails and resource cards.

The dashboard is not required; its texts fall back to English.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_file
from babel.messages.pofile import read_po

from relay import i18n

ROOT = Path(__file__).parent.parent
KEYWORDS = {**DEFAULT_KEYWORDS, "N_": None}
# Relay modules whose translated texts reach visitors. Modules that do not
# exist in this tree are skipped.
VISITOR_MODULES = (
    "relay/ratelimit.py",
    "relay/sites.py",
    "relay/mail.py",
    "relay/mailthread.py",
    "relay/notify.py",
    "relay/replycodes.py",
    "relay/resources.py",
    "relay/hours.py",
)
PLACEHOLDER = re.compile(r"%\((\w+)\)[sdif]")


def visitor_sources() -> Iterator[tuple[str, Path]]:
    """Yield each visitor-facing source file with its Babel extraction method."""
    for path in sorted((ROOT / "widget").rglob("*.py")):
        yield "python", path
    for path in sorted((ROOT / "widget").rglob("*.html")):
        yield "jinja2", path
    for path in sorted((ROOT / "widget").rglob("*.js")):
        yield "javascript", path
    for path in sorted((ROOT / "relay" / "static").rglob("*.js")):
        yield "javascript", path
    for pattern in ("*.html", "*.txt"):
        for path in sorted((ROOT / "relay" / "templates").rglob(pattern)):
            yield "jinja2", path
    for name in VISITOR_MODULES:
        path = ROOT / name
        if path.exists():
            yield "python", path


def extracted(
    sources: Iterable[tuple[str, Path]],
) -> dict[str | tuple[str, str], str]:
    """Return each message id found in ``sources`` with the file it came from."""
    found: dict[str | tuple[str, str], str] = {}
    for method, path in sources:
        for _, message, _, _ in extract_from_file(method, path, keywords=KEYWORDS):
            if isinstance(message, tuple):
                key: str | tuple[str, str] = (message[0], message[1])
            else:
                key = message
            name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
            found.setdefault(key, str(name))
    return found


def maltese_catalogue() -> Catalog:
    path = i18n.LOCALE_DIR / "mt" / "LC_MESSAGES" / "messages.po"
    with path.open("rb") as file:
        return read_po(file, locale="mt")


def untranslated(
    found: dict[str | tuple[str, str], str], catalogue: Catalog
) -> list[str]:
    """Return a line for each message id without a usable Maltese translation."""
    problems = []
    for message_id, source in sorted(found.items(), key=lambda item: str(item[0])):
        lookup = message_id[0] if isinstance(message_id, tuple) else message_id
        message = catalogue.get(lookup)
        if message is None:
            problems.append(f"{source}: {message_id!r} is not in the catalogue")
            continue
        strings = (
            message.string if isinstance(message.string, tuple) else (message.string,)
        )
        if message.fuzzy:
            problems.append(f"{source}: {message_id!r} is marked fuzzy")
        elif not all(strings):
            problems.append(f"{source}: {message_id!r} has no Maltese translation")
    return problems


def placeholders(text: str) -> set[str]:
    """Return the placeholders of ``text`` with their conversion, e.g. ``%(num)d``."""
    return {match.group(0) for match in PLACEHOLDER.finditer(text)}


def placeholder_problems(catalogue: Catalog) -> list[str]:
    """Return a line for each translation whose placeholders differ from its id.

    A plain message must use exactly the id's placeholders. A plural form may
    leave some out (Maltese "one" can spell out the number), but never add one
    and never change its conversion, and its last form must use them all.
    """
    problems = []
    for message in catalogue:
        if not message.id:
            continue
        if isinstance(message.id, tuple):
            allowed = placeholders(message.id[0]) | placeholders(message.id[1])
            forms = [form for form in message.string if form]
            for form in forms:
                if not placeholders(form) <= allowed:
                    problems.append(f"{message.id[0]!r}: {form!r} adds a placeholder")
            if forms and placeholders(forms[-1]) != placeholders(message.id[1]):
                problems.append(f"{message.id[1]!r}: the last form lacks a placeholder")
        elif message.string and placeholders(message.string) != placeholders(
            message.id
        ):
            problems.append(
                f"{message.id!r}: {message.string!r} differs in placeholders"
            )
    return problems


def test_visitor_texts_have_maltese() -> None:
    found = extracted(visitor_sources())

    problems = untranslated(found, maltese_catalogue())

    assert len(found) > 90, "too few texts extracted; is the extraction broken?"
    assert problems == [], "run `make messages`, then translate:\n" + "\n".join(
        problems
    )


def test_maltese_placeholders_match() -> None:
    problems = placeholder_problems(maltese_catalogue())

    assert problems == [], "\n".join(problems)


def test_new_text_without_translation_is_found(tmp_path: Path) -> None:
    template = tmp_path / "page.html"
    template.write_text(
        '<p>{{ _("A text nobody has translated yet") }}</p>'
        '<p>{{ _("Quick exit") }}</p>',
        encoding="utf-8",
    )
    script = tmp_path / "page.js"
    script.write_text('show(_("Another new text %(count)s"));\n', encoding="utf-8")

    found = extracted([("jinja2", template), ("javascript", script)])
    problems = untranslated(found, maltese_catalogue())

    assert len(problems) == 2
    assert "A text nobody has translated yet" in problems[0]
    assert "Another new text" in problems[1]


def test_placeholder_mismatch_is_found() -> None:
    catalogue = Catalog(locale="mt")
    catalogue.add("In an emergency call %(number)s.", "F'emerġenza ċempel.")
    catalogue.add("Wrong %(name)s", "Ħażin %(name)d")
    catalogue.add(
        ("%(num)d chat", "%(num)d chats"),
        ("chat waħda", "%(num)d chats", "%(num)d chats", "%(num)d chats", "%(x)s"),
    )

    problems = placeholder_problems(catalogue)

    assert len(problems) == 4
    assert "emergency" in problems[0]
    assert "Wrong" in problems[1]
    assert "adds a placeholder" in problems[2]
    assert "last form" in problems[3]


def test_hub_pages_exist_in_maltese() -> None:
    """Hub pages are Markdown files per language; each English one needs a twin."""
    content = ROOT / "relay" / "content"
    english = sorted(path.name for path in (content / "en").glob("*.md"))
    maltese = sorted(path.name for path in (content / "mt").glob("*.md"))

    assert english == maltese
