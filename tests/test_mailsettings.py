"""The ``VSO_MAIL_*`` settings: defaults, valid values and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.settings import Settings, SettingsError, load_settings

BASE = {"VSO_SECRET_KEY": "k" * 40}
IMAP = {
    "VSO_MAIL_ADDRESS": "Help@Example.org",
    "VSO_MAIL_IMAP_HOST": "imap.example.org",
    "VSO_MAIL_IMAP_USER": "help",
    "VSO_MAIL_IMAP_PASSWORD": "imap-pass-123",
}


def load(**variables: str) -> Settings:
    return load_settings({**BASE, **variables})


def test_mail_settings_off_by_default() -> None:
    settings = load()
    assert settings.mail_address == ""
    assert settings.mail_imap_host == ""
    assert settings.mail_smtp_host == ""
    assert settings.mail_max_bytes == 10 * 1024 * 1024


def test_mail_settings_imap_defaults_to_tls() -> None:
    settings = load(**IMAP)
    assert settings.mail_address == "help@example.org"
    assert settings.mail_imap_tls == "tls"
    assert settings.mail_imap_port == 993
    assert settings.mail_imap_mailbox == "INBOX"
    assert "imap-pass-123" not in repr(settings)


@pytest.mark.parametrize(
    ("tls", "port"), [("tls", 465), ("starttls", 587), ("none", 25)]
)
def test_mail_settings_smtp_port_follows_tls(tls: str, port: int) -> None:
    settings = load(
        VSO_MAIL_ADDRESS="help@example.org",
        VSO_MAIL_SMTP_HOST="127.0.0.1",
        VSO_MAIL_SMTP_TLS=tls,
    )
    assert settings.mail_smtp_port == port


def test_mail_settings_password_file(tmp_path: Path) -> None:
    path = tmp_path / "imap-password"
    path.write_text("from-a-file\n")
    variables = {key: value for key, value in IMAP.items() if "PASSWORD" not in key}
    settings = load(**variables, VSO_MAIL_IMAP_PASSWORD_FILE=str(path))
    assert settings.mail_imap_password == "from-a-file"
    assert settings.mail_imap_password_file == path


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"VSO_MAIL_ADDRESS": "not an address"}, "VSO_MAIL_ADDRESS"),
        ({"VSO_MAIL_ADDRESS": "help+tag@example.org"}, "without a +tag"),
        ({**IMAP, "VSO_MAIL_IMAP_TLS": "maybe"}, "VSO_MAIL_IMAP_TLS"),
        ({**IMAP, "VSO_MAIL_IMAP_TLS": "none"}, "only for a loopback host"),
        ({**IMAP, "VSO_MAIL_IMAP_PORT": "0"}, "VSO_MAIL_IMAP_PORT=0 is out of range"),
        ({**IMAP, "VSO_MAIL_IMAP_PASSWORD": ""}, "VSO_MAIL_IMAP_PASSWORD"),
        ({**IMAP, "VSO_MAIL_IMAP_MAILBOX": 'a"b'}, "VSO_MAIL_IMAP_MAILBOX"),
        ({**IMAP, "VSO_MAIL_MAX_BYTES": "100"}, "VSO_MAIL_MAX_BYTES=100"),
        ({**IMAP, "VSO_MAIL_POLL_SECONDS": "soon"}, "VSO_MAIL_POLL_SECONDS"),
        ({"VSO_MAIL_SMTP_HOST": "smtp.example.org"}, "without VSO_MAIL_ADDRESS"),
        ({"VSO_MAIL_NAME": " "}, "VSO_MAIL_NAME"),
        (
            {
                "VSO_MAIL_ADDRESS": "help@example.org",
                "VSO_MAIL_IMAP_PASSWORD_FILE": "/nonexistent/x",
            },
            "cannot read /nonexistent/x",
        ),
        ({"VSO_MAIL_TYPO": "1"}, "Unknown setting VSO_MAIL_TYPO"),
        ({"VSO_MAIL_CA_FILE": "/nonexistent/ca.pem"}, "VSO_MAIL_CA_FILE"),
    ],
)
def test_mail_settings_reject_invalid(variables: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("+", r"\+")):
        load(**variables)
