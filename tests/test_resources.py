"""The hub's content files: loading, checks, search, cards and staleness."""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path

import pytest

from relay.resources import (
    CONTENT_DIR,
    LANGUAGES,
    ContentError,
    load_content,
    resource_as_text,
    stale_report,
)

TODAY = datetime.date(2026, 12, 4)


@pytest.fixture
def content_dir(tmp_path: Path) -> Path:
    """A copy of the shipped content that a test may break."""
    target = tmp_path / "content"
    shutil.copytree(CONTENT_DIR, target)
    return target


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} is not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_shipped_content_loads() -> None:
    content = load_content()
    assert content.page_order == ("rights", "report", "staying-safe")
    for language in LANGUAGES:
        assert len(content.pages_in(language)) == 3
    ids = [service.id for service in content.services]
    assert ids == [
        "emergency",
        "victim-support-line",
        "supportline-179",
        "victim-support-malta",
        "police",
        "legal-aid",
    ]
    for service in content.services:
        assert service.source


def test_seeded_numbers_match_the_published_ones() -> None:
    content = load_content()
    phones = {service.id: service.phone for service in content.services}
    assert phones["emergency"] == "112"
    assert phones["victim-support-line"] == "116 006"
    assert phones["supportline-179"] == "179"
    assert phones["victim-support-malta"] == "+356 2122 8333"
    assert phones["police"] == "+356 2294 0000"
    legal_aid = content.service("legal-aid")
    assert legal_aid is not None
    assert legal_aid.website == "https://legalaidmalta.gov.mt"


def test_rights_page_has_every_article_4_section() -> None:
    content = load_content()
    for language in LANGUAGES:
        page = content.page("rights", language)
        assert page is not None
        # Eleven items of the Directive, then "where to get help now".
        assert len(page.sections) == 12
        assert "539" in page.html


def test_rendered_links_are_noopener() -> None:
    page = load_content().page("rights", "en")
    assert page is not None
    assert 'href="/info/services" rel="noopener noreferrer"' in page.html


def test_raw_html_in_markdown_is_shown_as_text(content_dir: Path) -> None:
    path = content_dir / "en" / "report.md"
    _edit(path, "## What happens next", "<script>alert(1)</script>\n\n## Next")
    page = load_content(content_dir).page("report", "en")
    assert page is not None
    assert "<script>" not in page.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.html


def test_plain_http_link_is_rejected(content_dir: Path) -> None:
    path = content_dir / "en" / "report.md"
    _edit(
        path,
        "[directory of support services](/info/services)",
        "[x](http://example.org/)",
    )
    with pytest.raises(ContentError, match=r"report\.md: link .* is not allowed"):
        load_content(content_dir)


def test_javascript_link_is_not_a_link(content_dir: Path) -> None:
    path = content_dir / "en" / "report.md"
    _edit(
        path,
        "[directory of support services](/info/services)",
        "[x](javascript:alert(1))",
    )
    page = load_content(content_dir).page("report", "en")
    assert page is not None
    assert "javascript:" in page.html
    assert 'href="javascript:' not in page.html


def test_page_without_title_is_rejected(content_dir: Path) -> None:
    path = content_dir / "mt" / "staying-safe.md"
    _edit(path, "# Kif tibqa'", "Kif tibqa'")
    with pytest.raises(ContentError, match=r"mt/staying-safe\.md: the page must start"):
        load_content(content_dir)


def test_skipped_heading_level_is_rejected(content_dir: Path) -> None:
    _edit(content_dir / "en" / "rights.md", "## Compensation", "#### Compensation")
    with pytest.raises(ContentError, match=r"rights\.md: heading 'Compensation' skips"):
        load_content(content_dir)


def test_missing_translation_of_page_is_rejected(content_dir: Path) -> None:
    (content_dir / "mt" / "report.md").unlink()
    with pytest.raises(ContentError, match=r"mt/report\.md: the page is missing"):
        load_content(content_dir)


def test_invalid_toml_names_the_file(content_dir: Path) -> None:
    _edit(content_dir / "services.toml", 'id = "police"', 'id = "police')
    with pytest.raises(ContentError, match=r"services\.toml: invalid TOML"):
        load_content(content_dir)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('phone = "179"', 'phone = "call us"', r"'supportline-179': field 'phone'"),
        ('name.mt = "Victim Support Malta"\n', "", r"field 'name\.mt' is missing"),
        (
            'website = "https://legalaidmalta.gov.mt"',
            'website = "http://legalaidmalta.gov.mt"',
            r"'legal-aid': field 'website'",
        ),
        (
            'website = "https://legalaidmalta.gov.mt"',
            'email = "nobody"',
            r"'legal-aid': field 'email'",
        ),
        ("checked = 2023-05-01", 'checked = "May 2023"', r"field 'checked' must be"),
        ('id = "police"', 'id = "Police!"', r"service 5: field 'id'"),
        ('id = "police"', 'id = "emergency"', r"id 'emergency' is taken"),
        ('id = "police"', 'id = "rights"', r"service 'rights' has the id of a page"),
        (
            'source = "Public list of help numbers in Malta, undated"',
            "",
            r"'legal-aid': field 'source' is missing",
        ),
        ('phone = "112"', 'phone = "112"\nfax = "1"', r"unknown field 'fax'"),
        (
            'website = "https://legalaidmalta.gov.mt"\n',
            "",
            r"'legal-aid': give at least one of",
        ),
        (
            'title.mt = "Servizzi',
            'titlu.mt = "Servizzi',
            r"\[directory\]: field 'title",
        ),
    ],
)
def test_malformed_service_names_file_and_field(
    content_dir: Path, old: str, new: str, message: str
) -> None:
    _edit(content_dir / "services.toml", old, new)
    with pytest.raises(ContentError, match=r"services\.toml") as error:
        load_content(content_dir)
    assert error.match(message)


def test_stale_entries_are_listed_with_file_and_date() -> None:
    content = load_content()
    lines = stale_report(content, datetime.date(2023, 6, 1), max_age_days=180)
    assert lines == [
        f"{content.directory_path}: service 'emergency': last checked 2020-01-01,"
        " 1247 days ago",
        f"{content.directory_path}: service 'supportline-179': last checked"
        " 2020-01-01, 1247 days ago",
        f"{content.directory_path}: service 'victim-support-malta': last checked"
        " 2020-01-01, 1247 days ago",
        f"{content.directory_path}: service 'police': last checked 2020-01-01,"
        " 1247 days ago",
        f"{content.directory_path}: service 'legal-aid': never checked",
    ]


def test_entry_checked_today_is_fresh(content_dir: Path) -> None:
    path = content_dir / "services.toml"
    text = path.read_text(encoding="utf-8")
    text = text.replace("checked = 2020-01-01", "checked = 2026-12-01")
    text = text.replace("checked = 2023-05-01", "checked = 2026-12-01")
    text = text.replace(
        'source = "Public list of help numbers in Malta, undated"',
        'source = "Telephoned"\nchecked = 2026-12-04',
    )
    path.write_text(text, encoding="utf-8")
    content = load_content(content_dir)
    assert stale_report(content, TODAY, max_age_days=180) == []
    # At exactly the limit an entry is fresh; a day later it is stale.
    later = TODAY + datetime.timedelta(days=180)
    lines = stale_report(content, later, max_age_days=180)
    assert len(lines) == 5
    assert not any("legal-aid" in line for line in lines)


def test_search_matches_names_and_purposes() -> None:
    content = load_content()
    ids = [result.id for result in content.search("POLICE", "en")]
    assert ids == ["emergency", "police"]
    assert [r.id for r in content.search("legal aid", "en")][0] == "legal-aid"


def test_search_ignores_maltese_accents() -> None:
    content = load_content()
    results = content.search("ghajnuna legali", "mt")
    assert results[0].id == "legal-aid"
    assert results[0].title == "Għajnuna Legali Malta"


def test_search_finds_page_titles_and_sections() -> None:
    content = load_content()
    kinds = {(r.kind, r.id) for r in content.search("private window", "en")}
    assert ("page", "staying-safe") in kinds
    assert content.search("restorative", "en")[0].id == "rights"


def test_search_of_blank_or_unknown_language_is_empty() -> None:
    content = load_content()
    assert content.search("   ", "en") == []
    assert content.search("police", "fr") == []
    assert content.search("zzzz-nothing", "en") == []


def test_card_of_service_and_page() -> None:
    content = load_content()
    card = content.card("victim-support-line", "mt")
    assert card is not None
    assert card["kind"] == "service"
    assert card["phone"] == "116 006"
    assert card["hours"] == "Kuljum, mis-07:30 sas-19:30"
    page = content.card("report", "en")
    assert page is not None
    assert page["link"] == "/info/report?lang=en"
    assert content.card("nope", "en") is None
    assert content.card("police", "de") is None


def test_resource_as_text_lists_each_field() -> None:
    content = load_content()
    service = content.service("victim-support-line")
    assert service is not None
    assert resource_as_text(service, "en").splitlines() == [
        "National victim support line (Victim Support Agency)",
        "Information, support and referral for victims of crime.",
        "Phone: 116 006",
        "Hours: Every day, 07:30 to 19:30",
    ]
    page = content.page("rights", "en")
    assert page is not None
    text = resource_as_text(page, "en", "https://chat.example.org")
    assert text.endswith("Read more: https://chat.example.org/info/rights?lang=en")
