"""Checks on a partner site's settings: origins, colour contrast, exit address."""

from __future__ import annotations

import pytest

from relay.site_form import contrast_with_white, darker, parse_site_form

VALID = {
    "name": "Example NGO",
    "origins": "https://www.example.org\nhttps://example.org:8443",
    "greeting": "Hello, we are here to listen.",
    "brand_colour": "#1D5B79",
    "exit_url": "https://www.example.org/weather",
}


def test_valid_form_has_no_errors() -> None:
    fields = parse_site_form(VALID)
    assert fields.errors == {}
    assert fields.origins == ["https://example.org:8443", "https://www.example.org"]
    assert fields.brand_colour == "#1d5b79"


@pytest.mark.parametrize(
    ("colour", "ratio"),
    [("#000000", 21.0), ("#ffffff", 1.0), ("#767676", 4.54), ("#1d5b79", 7.43)],
)
def test_contrast_with_white(colour: str, ratio: float) -> None:
    assert contrast_with_white(colour) == pytest.approx(ratio, abs=0.01)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("brand_colour", "#777777", "contrast of 4.5:1"),
        ("brand_colour", "#ffff00", "choose a darker colour"),
        ("brand_colour", "red", "is not a colour"),
        ("brand_colour", "#12345", "is not a colour"),
        ("brand_colour", "#1d5b79;}body{x", "is not a colour"),
        ("exit_url", "http://www.example.org/", "must start with https://"),
        ("exit_url", "javascript:alert(1)", "not an http or https address"),
        ("exit_url", "https://user:pw@example.org/", "user name"),
        ("exit_url", "", "not an http or https address"),
        ("name", "", "1 to 100 characters"),
        ("name", "x" * 101, "1 to 100 characters"),
        ("name", "Evil\u202eName", "control characters"),
        ("greeting", "x" * 301, "at most 300"),
        ("greeting", "Hi\x00there", "control characters"),
        ("origins", "", "at least one origin"),
        ("origins", "x" * 4001, "longer than 4000"),
    ],
)
def test_bad_field_rejected(name: str, value: str, message: str) -> None:
    fields = parse_site_form({**VALID, name: value})
    assert list(fields.errors) == [name]
    assert message in " ".join(fields.errors[name])


def test_each_bad_origin_reported() -> None:
    origins = (
        "https://ok.example.org\nftp://files.example\nhttps://a.example/path\n*.evil"
    )
    fields = parse_site_form({**VALID, "origins": origins})
    messages = fields.errors["origins"]
    assert len(messages) == 3
    assert "'ftp://files.example'" in messages[0]
    assert "'https://a.example/path'" in messages[1]
    assert "'*.evil'" in messages[2]


def test_too_many_origins_rejected() -> None:
    origins = "\n".join(f"https://site{number}.example" for number in range(21))
    fields = parse_site_form({**VALID, "origins": origins})
    assert "at most 20 origins" in fields.errors["origins"][0]


def test_greeting_whitespace_folded() -> None:
    fields = parse_site_form({**VALID, "greeting": "  Hello\r\n  there  "})
    assert fields.errors == {}
    assert fields.greeting == "Hello there"


def test_darker_scales_channels() -> None:
    assert darker("#ff8000") == "#cc6600"
