"""Tests of ``relay.settings.load_settings`` and the ``Settings`` properties."""

from __future__ import annotations

import dataclasses
import logging
import re
import stat
from pathlib import Path

import pytest

from relay.crypto import new_key_text
from relay.settings import Settings, SettingsError, load_settings

SECRET_KEY = "k" * 40
README = Path(__file__).resolve().parent.parent / "README.md"


def load(**variables: str) -> Settings:
    """Load settings from ``variables`` plus a valid secret key."""
    return load_settings({"VSO_SECRET_KEY": SECRET_KEY, **variables})


# Defaults


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("host", "127.0.0.1"),
        ("port", 8000),
        ("database", Path("var/vso.sqlite3")),
        ("public_url", "http://127.0.0.1:8000"),
        ("log_level", "info"),
        ("demo", True),
        ("visitor_grace_seconds", 60.0),
        ("volunteer_grace_seconds", 30.0),
        ("default_capacity", 2),
        ("max_message_chars", 4000),
        ("max_frame_bytes", 64 * 1024),
        ("session_max_age_seconds", 12 * 3600),
        ("session_idle_seconds", 2 * 3600),
        ("data_key", ""),
        ("data_key_file", None),
        ("retention_days", 30),
        ("purge_interval_seconds", 3600.0),
        ("block_seconds", 3600),
    ],
)
def test_load_settings_default(name: str, expected: object) -> None:
    assert getattr(load(), name) == expected


def test_load_settings_ignores_other_variables() -> None:
    settings = load(PATH="/usr/bin", VSOX_PORT="1", vso_port="1")

    assert settings.port == 8000


# Each variable


@pytest.mark.parametrize(
    ("variable", "raw", "name", "expected"),
    [
        ("VSO_HOST", " 0.0.0.0 ", "host", "0.0.0.0"),
        ("VSO_PORT", "9000", "port", 9000),
        ("VSO_PORT", "1", "port", 1),
        ("VSO_PORT", "65535", "port", 65535),
        (
            "VSO_DATABASE",
            "/srv/vso/db.sqlite3",
            "database",
            Path("/srv/vso/db.sqlite3"),
        ),
        ("VSO_SECRET_KEY", f"  {'s' * 32}\n", "secret_key", "s" * 32),
        (
            "VSO_PUBLIC_URL",
            "https://chat.example.org/",
            "public_url",
            "https://chat.example.org",
        ),
        (
            "VSO_PUBLIC_URL",
            "http://chat.example.org:8080",
            "public_url",
            "http://chat.example.org:8080",
        ),
        ("VSO_LOG_LEVEL", "debug", "log_level", "debug"),
        ("VSO_LOG_LEVEL", " WARNING ", "log_level", "warning"),
        ("VSO_LOG_LEVEL", "error", "log_level", "error"),
        ("VSO_DEMO", "false", "demo", False),
        ("VSO_DEMO", "0", "demo", False),
        ("VSO_DEMO", "no", "demo", False),
        ("VSO_DEMO", "OFF", "demo", False),
        ("VSO_DEMO", "true", "demo", True),
        ("VSO_DEMO", "1", "demo", True),
        ("VSO_DEMO", " Yes ", "demo", True),
        ("VSO_DEMO", "on", "demo", True),
        ("VSO_VISITOR_GRACE_SECONDS", "2.5", "visitor_grace_seconds", 2.5),
        ("VSO_VISITOR_GRACE_SECONDS", "86400", "visitor_grace_seconds", 86400.0),
        ("VSO_VOLUNTEER_GRACE_SECONDS", "10", "volunteer_grace_seconds", 10.0),
        ("VSO_VOLUNTEER_GRACE_SECONDS", "0.1", "volunteer_grace_seconds", 0.1),
        ("VSO_DEFAULT_CAPACITY", "3", "default_capacity", 3),
        ("VSO_DEFAULT_CAPACITY", "20", "default_capacity", 20),
        ("VSO_MAX_MESSAGE_CHARS", "500", "max_message_chars", 500),
        ("VSO_MAX_FRAME_BYTES", "60000", "max_frame_bytes", 60000),
        ("VSO_SESSION_MAX_AGE_SECONDS", "3600", "session_max_age_seconds", 3600),
    ],
)
def test_load_settings_variable_parsed(
    variable: str, raw: str, name: str, expected: object
) -> None:
    assert getattr(load(**{variable: raw}), name) == expected


def test_load_settings_small_frame_with_short_messages() -> None:
    settings = load(VSO_MAX_FRAME_BYTES="2048", VSO_MAX_MESSAGE_CHARS="80")

    assert settings.max_frame_bytes == 2048


def test_load_settings_frame_too_small_for_messages() -> None:
    with pytest.raises(SettingsError) as raised:
        load(VSO_MAX_FRAME_BYTES="2048")

    assert "VSO_MAX_FRAME_BYTES" in str(raised.value)
    assert "VSO_MAX_MESSAGE_CHARS" in str(raised.value)


def test_load_settings_port_sets_default_public_url() -> None:
    settings = load(VSO_PORT="9000")

    assert settings.public_url == "http://127.0.0.1:9000"


def test_load_settings_public_url_wins_over_port() -> None:
    settings = load(VSO_PORT="9000", VSO_PUBLIC_URL="https://chat.example.org")

    assert settings.public_url == "https://chat.example.org"


# Invalid values


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("VSO_HOST", ""),
        ("VSO_HOST", "   "),
        ("VSO_PORT", "http"),
        ("VSO_PORT", ""),
        ("VSO_PORT", "80.5"),
        ("VSO_PORT", "0"),
        ("VSO_PORT", "-1"),
        ("VSO_PORT", "70000"),
        ("VSO_DATABASE", ""),
        ("VSO_DATABASE", "  "),
        ("VSO_SECRET_KEY", "short"),
        ("VSO_SECRET_KEY", "k" * 31),
        ("VSO_SECRET_KEY", " " * 40),
        ("VSO_PUBLIC_URL", "ftp://chat.example.org"),
        ("VSO_PUBLIC_URL", "ws://chat.example.org"),
        ("VSO_PUBLIC_URL", "chat.example.org"),
        ("VSO_PUBLIC_URL", "https://"),
        ("VSO_PUBLIC_URL", ""),
        ("VSO_PUBLIC_URL", "https://chat.example.org/chat"),
        ("VSO_PUBLIC_URL", "https://chat.example.org/?page=1"),
        ("VSO_PUBLIC_URL", "https://chat.example.org?page=1"),
        ("VSO_PUBLIC_URL", "https://chat.example.org#top"),
        ("VSO_LOG_LEVEL", "verbose"),
        ("VSO_LOG_LEVEL", "critical"),
        ("VSO_LOG_LEVEL", ""),
        ("VSO_DEMO", "maybe"),
        ("VSO_DEMO", ""),
        ("VSO_DEMO", "2"),
        ("VSO_VISITOR_GRACE_SECONDS", "0"),
        ("VSO_VISITOR_GRACE_SECONDS", "-5"),
        ("VSO_VISITOR_GRACE_SECONDS", "soon"),
        ("VSO_VISITOR_GRACE_SECONDS", ""),
        ("VSO_VISITOR_GRACE_SECONDS", "nan"),
        ("VSO_VISITOR_GRACE_SECONDS", "inf"),
        ("VSO_VISITOR_GRACE_SECONDS", "86401"),
        ("VSO_VOLUNTEER_GRACE_SECONDS", "0"),
        ("VSO_VOLUNTEER_GRACE_SECONDS", "-0.5"),
        ("VSO_VOLUNTEER_GRACE_SECONDS", "30s"),
        ("VSO_DEFAULT_CAPACITY", "0"),
        ("VSO_DEFAULT_CAPACITY", "21"),
        ("VSO_DEFAULT_CAPACITY", "two"),
        ("VSO_MAX_MESSAGE_CHARS", "0"),
        ("VSO_MAX_MESSAGE_CHARS", "4001"),
        ("VSO_MAX_FRAME_BYTES", "1023"),
        ("VSO_MAX_FRAME_BYTES", "65537"),
        ("VSO_SESSION_MAX_AGE_SECONDS", "59"),
        ("VSO_SESSION_MAX_AGE_SECONDS", "604801"),
        ("VSO_PROT", "8000"),
        ("VSO_port", "8000"),
    ],
)
def test_load_settings_invalid_value_names_variable(variable: str, raw: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load(**{variable: raw})

    assert variable in str(raised.value)


@pytest.mark.parametrize(
    "raw",
    [
        "http://127.0.0.1:99999",
        "https://chat.example.org:0x50",
        "https://chat.example.org:port",
    ],
)
def test_load_settings_public_url_bad_port(raw: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load(VSO_PUBLIC_URL=raw)

    assert "VSO_PUBLIC_URL" in str(raised.value)


def test_load_settings_public_url_user_info() -> None:
    # Browsers never send user info in Origin, so such a URL cannot match it.
    with pytest.raises(SettingsError) as raised:
        load(VSO_PUBLIC_URL="https://admin:hunter2@chat.example.org")

    assert "VSO_PUBLIC_URL" in str(raised.value)


def test_load_settings_unknown_variable_lists_known() -> None:
    with pytest.raises(SettingsError) as raised:
        load(VSO_PROT="8000")

    assert "VSO_PORT" in str(raised.value)


@pytest.mark.parametrize(
    ("name", "replacement"),
    [
        ("VSO_TIMEZONE", "VSO_TIME_ZONE"),
        ("VSO_OPENING_HOURS", "/dashboard/sites/ID/hours"),
    ],
)
def test_load_settings_replaced_variable_names_replacement(
    name: str, replacement: str
) -> None:
    with pytest.raises(SettingsError, match="is no longer read") as raised:
        load(**{name: "Europe/Malta"})

    assert replacement in str(raised.value)


def test_settings_error_is_value_error() -> None:
    assert issubclass(SettingsError, ValueError)


# Secret key file


def test_load_settings_generates_secret_key(tmp_path: Path) -> None:
    database = tmp_path / "data" / "vso.sqlite3"

    settings = load_settings({"VSO_DATABASE": str(database)})

    key_file = database.parent / "secret_key"
    assert len(settings.secret_key) >= 32
    assert key_file.read_text(encoding="utf-8") == settings.secret_key + "\n"


def test_load_settings_secret_key_file_mode(tmp_path: Path) -> None:
    database = tmp_path / "vso.sqlite3"

    load_settings({"VSO_DATABASE": str(database)})

    mode = stat.S_IMODE((tmp_path / "secret_key").stat().st_mode)
    assert mode == 0o600


def test_load_settings_secret_key_reused(tmp_path: Path) -> None:
    environ = {"VSO_DATABASE": str(tmp_path / "vso.sqlite3")}

    first = load_settings(environ)
    second = load_settings(environ)

    assert second.secret_key == first.secret_key


def test_load_settings_secret_key_generated_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="relay.settings")

    settings = load_settings({"VSO_DATABASE": str(tmp_path / "vso.sqlite3")})

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "VSO_SECRET_KEY" in warnings[0].getMessage()
    assert str(tmp_path / "secret_key") in warnings[0].getMessage()
    assert settings.secret_key not in caplog.text


def test_load_settings_secret_key_reused_no_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    environ = {"VSO_DATABASE": str(tmp_path / "vso.sqlite3")}
    load_settings(environ)
    caplog.clear()
    caplog.set_level(logging.WARNING, logger="relay.settings")

    load_settings(environ)

    assert caplog.records == []


def test_load_settings_secret_key_variable_skips_file(tmp_path: Path) -> None:
    load(VSO_DATABASE=str(tmp_path / "vso.sqlite3"))

    assert not (tmp_path / "secret_key").exists()


def test_load_settings_short_secret_key_file(tmp_path: Path) -> None:
    key_file = tmp_path / "secret_key"
    key_file.write_text("too short\n", encoding="utf-8")

    with pytest.raises(SettingsError) as raised:
        load_settings({"VSO_DATABASE": str(tmp_path / "vso.sqlite3")})

    assert str(key_file) in str(raised.value)


# Properties


def test_own_origins_loopback_includes_both_names() -> None:
    settings = load(VSO_PUBLIC_URL="http://localhost:8000")

    assert settings.own_origins == {"http://localhost:8000", "http://127.0.0.1:8000"}


def test_own_origins_default_includes_both_names() -> None:
    settings = load(VSO_PORT="8123")

    assert settings.own_origins == {"http://127.0.0.1:8123", "http://localhost:8123"}


def test_own_origins_loopback_without_port() -> None:
    settings = load(VSO_PUBLIC_URL="http://127.0.0.1")

    assert settings.own_origins == {"http://127.0.0.1", "http://localhost"}


def test_own_origins_public_host_only() -> None:
    settings = load(VSO_PUBLIC_URL="https://chat.example.org")

    assert settings.own_origins == {"https://chat.example.org"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://chat.example.org:443", "https://chat.example.org"),
        ("http://chat.example.org:80", "http://chat.example.org"),
        ("https://Chat.Example.ORG", "https://chat.example.org"),
    ],
    ids=["default-https-port", "default-http-port", "uppercase-host"],
)
def test_public_origin_matches_browser_origin(raw: str, expected: str) -> None:
    # Browsers send Origin with a lowercase host and without the default port,
    # and the relay compares Origin with ``own_origins`` as exact strings.
    settings = load(VSO_PUBLIC_URL=raw)

    assert settings.public_origin == expected


def test_public_ws_url_http() -> None:
    settings = load(VSO_PUBLIC_URL="http://127.0.0.1:8000")

    assert settings.public_ws_url == "ws://127.0.0.1:8000"


def test_public_ws_url_https() -> None:
    settings = load(VSO_PUBLIC_URL="https://chat.example.org/")

    assert settings.public_ws_url == "wss://chat.example.org"


def test_secure_https() -> None:
    assert load(VSO_PUBLIC_URL="https://chat.example.org").secure


def test_secure_http() -> None:
    assert not load(VSO_PUBLIC_URL="http://chat.example.org").secure


# Operations


def test_ws_ping_seconds_parsed() -> None:
    assert load(VSO_WS_PING_SECONDS="2.5").ws_ping_seconds == 2.5


@pytest.mark.parametrize("raw", ["0", "-1", "soon"])
def test_ws_ping_seconds_invalid(raw: str) -> None:
    with pytest.raises(SettingsError, match="VSO_WS_PING_SECONDS"):
        load(VSO_WS_PING_SECONDS=raw)


def test_log_format_json() -> None:
    assert load(VSO_LOG_FORMAT="JSON").log_format == "json"


def test_log_format_invalid() -> None:
    with pytest.raises(SettingsError, match="VSO_LOG_FORMAT"):
        load(VSO_LOG_FORMAT="xml")


def test_metrics_allow_default_loopback() -> None:
    allowed = [str(network) for network in load().metrics_allow]

    assert allowed == ["127.0.0.1/32", "::1/128"]


def test_metrics_allow_addresses_and_networks() -> None:
    settings = load(VSO_METRICS_ALLOW="10.0.0.5, 192.168.0.0/16,fd00::/8")

    assert [str(network) for network in settings.metrics_allow] == [
        "10.0.0.5/32",
        "192.168.0.0/16",
        "fd00::/8",
    ]


def test_metrics_allow_invalid() -> None:
    with pytest.raises(SettingsError, match="prometheus.local"):
        load(VSO_METRICS_ALLOW="127.0.0.1,prometheus.local")


# Documentation


@pytest.mark.parametrize(
    "variable",
    [f"VSO_{field.name.upper()}" for field in dataclasses.fields(Settings)],
)
def test_readme_documents_setting(variable: str) -> None:
    assert README.exists(), f"{README} is missing"
    lines = README.read_text(encoding="utf-8").splitlines()

    pattern = re.compile(rf"\b{variable}\b")

    assert any(pattern.search(line) for line in lines), f"README.md lacks {variable}"


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("VSO_DATA_KEY", "not-a-key"),
        ("VSO_DATA_KEY", "c2hvcnQ"),
        ("VSO_DATA_KEY_FILE", " "),
        ("VSO_RETENTION_DAYS", "-1"),
        ("VSO_RETENTION_DAYS", "3651"),
        ("VSO_PURGE_INTERVAL_SECONDS", "0"),
        ("VSO_BLOCK_SECONDS", "59"),
        ("VSO_SESSION_IDLE_SECONDS", "59"),
        ("VSO_TRUSTED_PROXIES", "proxy.example"),
    ],
)
def test_load_settings_safety_value_invalid(variable: str, raw: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        load(**{variable: raw})


def test_load_settings_data_key_accepts_several() -> None:
    keys = f"{new_key_text()}, {new_key_text()}"

    assert load(VSO_DATA_KEY=keys).data_key == keys


def test_load_settings_trusted_proxies_list() -> None:
    settings = load(VSO_TRUSTED_PROXIES="127.0.0.1, ::1")

    assert settings.trusted_proxies == frozenset({"127.0.0.1", "::1"})
