"""Languages: Maltese plural rules, catalogue compiling at install and in memory,
the request language over HTTP and WebSocket, and the language volunteers see."""

from __future__ import annotations

import gettext
import logging
import os
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from babel import Locale
from babel.messages.pofile import read_po
from babel.plural import to_gettext

from relay import i18n
from relay.settings import SettingsError, load_settings
from tests.relayserver import RelayServer, available_volunteer, visitor

ROOT = Path(__file__).parent.parent
MT_CATALOGUE = i18n.LOCALE_DIR / "mt" / "LC_MESSAGES" / "messages.po"
# The gettext order of CLDR plural categories, as babel.plural.to_gettext uses it.
CATEGORY_ORDER = ("zero", "one", "two", "few", "many", "other")
PLURAL_SINGULAR = "Up to %(num)d character."
PLURAL_PLURAL = "Up to %(num)d characters."


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def maltese() -> Iterator[None]:
    """Run the test in Maltese and go back to the default afterwards."""
    i18n.activate("mt")
    try:
        yield
    finally:
        i18n.activate(i18n.DEFAULT_LANGUAGE)


def maltese_forms(singular: str) -> list[str]:
    with MT_CATALOGUE.open("rb") as file:
        catalogue = read_po(file)
    message = catalogue.get((singular, PLURAL_PLURAL))
    if message is None:
        message = next(m for m in catalogue if m.id and m.id[0] == singular)
    return list(message.string)


# Plural forms


def test_maltese_header_is_babels_cldr_rule() -> None:
    text = MT_CATALOGUE.read_text(encoding="utf-8")
    header = "".join(re.findall(r'^"(.*)"$', text.split("\n\n")[0], re.MULTILINE))
    expected = to_gettext(Locale.parse("mt").plural_form)

    assert f"Plural-Forms: {expected}\\n" in header


@pytest.mark.parametrize("count", [0, 1, 2, 10, 11, 19, 20, 101])
def test_maltese_ngettext_follows_cldr(maltese: None, count: int) -> None:
    rule = Locale.parse("mt").plural_form
    tags = [tag for tag in CATEGORY_ORDER if tag in rule.tags or tag == "other"]
    expected_form = maltese_forms(PLURAL_SINGULAR)[tags.index(rule(count))]

    text = i18n.ngettext(PLURAL_SINGULAR, PLURAL_PLURAL, count)

    assert text == expected_form
    assert (text % {"num": count}).count(str(count)) == 1


def test_maltese_plural_forms_differ_by_category(maltese: None) -> None:
    forms = {
        count: i18n.ngettext(PLURAL_SINGULAR, PLURAL_PLURAL, count) % {"num": count}
        for count in (1, 2, 3, 11, 20)
    }

    assert forms[1] == "Sa 1 karattru."
    assert forms[2] == "Sa 2 karattri."
    assert forms[3] == "Sa 3 karattri."
    assert forms[11] == "Sa 11-il karattru."
    assert forms[20] == "Sa 20 karattru."


def test_english_ngettext_uses_source_text() -> None:
    assert i18n.ngettext(PLURAL_SINGULAR, PLURAL_PLURAL, 1) == PLURAL_SINGULAR
    assert i18n.ngettext(PLURAL_SINGULAR, PLURAL_PLURAL, 0) == PLURAL_PLURAL


# Catalogues


def copy_locale(tmp_path: Path) -> Path:
    target = tmp_path / "locale"
    shutil.copytree(i18n.LOCALE_DIR, target, ignore=shutil.ignore_patterns("*.mo"))
    return target


def test_make_translations_compiles_mo_files(tmp_path: Path) -> None:
    locale = copy_locale(tmp_path)

    result = subprocess.run(
        ["make", "-s", "translations", f"LOCALE_DIR={locale}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    mo_path = locale / "mt" / "LC_MESSAGES" / "messages.mo"
    assert mo_path.exists()
    with mo_path.open("rb") as file:
        compiled = gettext.GNUTranslations(file)
    assert compiled.gettext("Quick exit") == "Ħruġ malajr"
    assert (locale / "en" / "LC_MESSAGES" / "messages.mo").exists()


def test_missing_mo_compiles_in_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    locale = copy_locale(tmp_path)

    with caplog.at_level(logging.INFO, logger="relay.i18n"):
        loaded = i18n.load_translations("mt", locale)

    assert loaded.gettext("Quick exit") == "Ħruġ malajr"
    assert "compiled" in caplog.text
    assert all(record.levelno == logging.INFO for record in caplog.records)
    assert not (locale / "mt" / "LC_MESSAGES" / "messages.mo").exists()


def test_stale_mo_loses_to_newer_po(tmp_path: Path) -> None:
    locale = copy_locale(tmp_path)
    folder = locale / "mt" / "LC_MESSAGES"
    (folder / "messages.mo").write_bytes(i18n.compile_catalogue(folder / "messages.po"))
    po_text = (folder / "messages.po").read_text(encoding="utf-8")
    corrected = po_text.replace('msgstr "Ħruġ malajr"', 'msgstr "Oħroġ malajr"')
    assert corrected != po_text
    (folder / "messages.po").write_text(corrected, encoding="utf-8")
    old = datetime(2020, 1, 1, tzinfo=UTC).timestamp()
    os.utime(folder / "messages.mo", (old, old))

    loaded = i18n.load_translations("mt", locale)

    assert loaded.gettext("Quick exit") == "Oħroġ malajr"


def test_current_mo_is_read(tmp_path: Path) -> None:
    locale = copy_locale(tmp_path)
    folder = locale / "mt" / "LC_MESSAGES"
    po_text = (folder / "messages.po").read_text(encoding="utf-8")
    # A .mo newer than its .po wins, even when they disagree.
    altered = folder / "altered.po"
    altered.write_text(
        po_text.replace('msgstr "Ħruġ malajr"', 'msgstr "Mill-mo"'), encoding="utf-8"
    )
    (folder / "messages.mo").write_bytes(i18n.compile_catalogue(altered))
    new = datetime(2100, 1, 1, tzinfo=UTC).timestamp()
    os.utime(folder / "messages.mo", (new, new))

    loaded = i18n.load_translations("mt", locale)

    assert loaded.gettext("Quick exit") == "Mill-mo"


def test_fuzzy_translation_is_not_used(tmp_path: Path) -> None:
    locale = copy_locale(tmp_path)
    po_path = locale / "mt" / "LC_MESSAGES" / "messages.po"
    text = po_path.read_text(encoding="utf-8")
    fuzzy = text.replace('msgid "Quick exit"', '#, fuzzy\nmsgid "Quick exit"')
    po_path.write_text(fuzzy, encoding="utf-8")

    loaded = i18n.load_translations("mt", locale)

    assert loaded.gettext("Quick exit") == "Quick exit"


def test_unknown_language_is_rejected() -> None:
    with pytest.raises(ValueError, match="not an offered language"):
        i18n.activate("xx")


# Dates, times and names


def test_time_zone_setting_is_checked() -> None:
    secret = {"VSO_SECRET_KEY": "k" * 40}

    default = load_settings(secret)
    chosen = load_settings({**secret, "VSO_TIME_ZONE": " UTC "})

    assert default.time_zone == "Europe/Malta"
    assert chosen.time_zone == "UTC"
    with pytest.raises(SettingsError, match="VSO_TIME_ZONE='Mars/Base'"):
        load_settings({**secret, "VSO_TIME_ZONE": "Mars/Base"})


def test_format_time_follows_language(maltese: None) -> None:
    moment = "2026-07-01T12:05:00.000Z"

    maltese_text = i18n.format_time(moment, "Europe/Malta")
    maltese_date = i18n.format_datetime(moment, "Europe/Malta")
    i18n.activate("en")
    english_date = i18n.format_datetime(moment, "Europe/Malta")

    assert maltese_text == "14:05"
    assert "Lul" in maltese_date
    assert "Jul" in english_date


def test_language_names_in_dashboard_language(maltese: None) -> None:
    maltese_names = dict(i18n.language_names())
    i18n.activate("en")
    english_names = dict(i18n.language_names())

    assert english_names == {"en": "English", "mt": "Maltese"}
    assert maltese_names["mt"] == "Malti"
    assert maltese_names["en"] != "English"


# Requests


def page_language(page: str) -> str | None:
    match = re.search(r'<html lang="([^"]+)" dir="([^"]+)">', page)
    return match.group(1) if match else None


def test_chat_page_language_from_query(relay: RelayServer) -> None:
    maltese = httpx.get(f"{relay.base_url}/chat?site=demo&lang=mt", timeout=10)
    english = httpx.get(f"{relay.base_url}/chat?site=demo", timeout=10)
    unknown = httpx.get(f"{relay.base_url}/chat?site=demo&lang=xx", timeout=10)

    assert page_language(maltese.text) == "mt"
    assert 'dir="ltr"' in maltese.text
    assert "Ibda chat" in maltese.text
    assert "/chat/nojs/start?site=demo&amp;lang=mt" in maltese.text
    assert page_language(english.text) == "en"
    assert "Start chat" in english.text
    assert page_language(unknown.text) == "en"


def test_site_default_language_applies(relay: RelayServer) -> None:
    added = relay.cli(
        "site", "add", "Malti", "--origin", "https://mt.example.org", "--language", "mt"
    )
    assert added.returncode == 0, added.stderr
    key = re.search(r"with key ([A-Za-z0-9_-]+)\.", added.stdout)
    assert key is not None

    default = httpx.get(f"{relay.base_url}/chat?site={key.group(1)}", timeout=10)
    chosen = httpx.get(f"{relay.base_url}/chat?site={key.group(1)}&lang=en", timeout=10)

    assert page_language(default.text) == "mt"
    assert "Kellimna" in added.stdout
    assert 'lang="mt"' in added.stdout
    assert page_language(chosen.text) == "en"
    assert f"/chat/nojs/start?site={key.group(1)}&amp;lang=en" in chosen.text


def test_safety_and_error_pages_in_maltese(relay: RelayServer) -> None:
    safety = httpx.get(f"{relay.base_url}/safety?site=demo&lang=mt", timeout=10)
    missing = httpx.get(f"{relay.base_url}/chat?site=nope&lang=mt", timeout=10)

    assert page_language(safety.text) == "mt"
    assert "jagħmel il-Ħruġ malajr</h2>" in safety.text
    assert missing.status_code == 404
    assert page_language(missing.text) == "mt"
    assert "Din il-link taċ-chat mhix valida." in missing.text


def test_language_does_not_leak_between_requests(relay: RelayServer) -> None:
    with httpx.Client(base_url=relay.base_url, timeout=10) as client:
        pages = [
            client.get("/chat?site=demo&lang=mt" if index % 2 else "/chat?site=demo")
            for index in range(6)
        ]

    languages = [page_language(page.text) for page in pages]

    assert languages == ["en", "mt", "en", "mt", "en", "mt"]


@pytest.mark.anyio
async def test_volunteer_sees_visitor_language(relay: RelayServer) -> None:
    assert relay.demo_password is not None
    cookie = await relay.sign_in("demo", relay.demo_password)
    volunteer = await available_volunteer(relay, cookie)
    english = await visitor(relay)
    await english.send({"type": "start"})
    await english.expect("started")
    client = await visitor(relay, site="demo&lang=mt")
    await client.send({"type": "start"})
    started = await client.expect("started")

    queue = await volunteer.expect_where(
        lambda frame: frame["type"] == "queue" and len(frame["entries"]) == 2
    )
    await volunteer.send({"type": "accept", "conversation": started["conversation"]})
    assigned = await volunteer.expect("assigned")

    languages = {entry["conversation"]: entry["language"] for entry in queue["entries"]}
    assert languages[started["conversation"]] == "mt"
    assert sorted(languages.values()) == ["en", "mt"]
    assert assigned["language"] == "mt"
    with sqlite3.connect(relay.database) as db:
        stored = db.execute(
            "SELECT language FROM conversations WHERE id = ?",
            (started["conversation"],),
        ).fetchone()
    assert stored == ("mt",)
    await volunteer.close()
    await english.close()
    await client.close()


@pytest.mark.anyio
async def test_refusal_in_visitor_language(relay: RelayServer) -> None:
    client = await visitor(relay, site="demo&lang=mt")
    await client.send({"type": "send", "client_id": "abcdefgh", "body": "hello"})

    error = await client.expect("error")
    await client.close()

    assert error["code"] == "not_started"
    assert error["message"] == "L-ewwel ibda chat."


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("mt-MT,en;q=0.5", "mt"),
        ("en-US,en;q=0.9", "en"),
        ("fr, mt;q=0.8", "mt"),
        ("mt;q=0, en;q=0.1", "en"),
        ("mt;q=abc, en", "en"),
        ("de", None),
        ("", None),
    ],
)
def test_accepted_language_ranks_header(header: str, expected: str | None) -> None:
    assert i18n.accepted_language(header) == expected


def test_dashboard_follows_accept_language(relay: RelayServer) -> None:
    maltese = httpx.get(
        f"{relay.base_url}/dashboard", headers={"accept-language": "mt"}, timeout=10
    )
    english = httpx.get(
        f"{relay.base_url}/dashboard", headers={"accept-language": "de"}, timeout=10
    )
    # Visitor pages follow the site, never the browser.
    chat = httpx.get(
        f"{relay.base_url}/chat?site=demo",
        headers={"accept-language": "mt"},
        timeout=10,
    )

    assert page_language(maltese.text) == "mt"
    assert "Isem tal-utent" in maltese.text
    assert page_language(english.text) == "en"
    assert "Username" in english.text
    assert page_language(chat.text) == "en"
