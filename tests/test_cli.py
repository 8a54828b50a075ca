"""Tests of the ``vso`` command, run as a subprocess, and of origin normalising."""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from relay.sites import normalise_origin

VSO = [sys.executable, "-m", "relay"]
COMMAND_TIMEOUT = 60.0
PASSWORD = "correct horse battery"
PUBLIC_URL = "https://chat.example.org"


class Vso:
    """A runner of ``vso`` with its own database in a temporary folder."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.database = directory / "vso.sqlite3"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("VSO_")},
            "VSO_DATABASE": str(self.database),
            "VSO_SECRET_KEY": "test-secret-key-" + "x" * 32,
            "VSO_PUBLIC_URL": PUBLIC_URL,
        }

    def run(
        self,
        *args: str,
        stdin: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*VSO, *args],
            input=stdin,
            stdin=subprocess.DEVNULL if stdin is None else None,
            env=self.env if env is None else env,
            cwd=self.directory,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )

    def add_volunteer(
        self,
        username: str,
        display_name: str = "Sam",
        password: str = PASSWORD,
        *extra: str,
    ) -> subprocess.CompletedProcess[str]:
        return self.run(
            "volunteer",
            "add",
            username,
            "--display-name",
            display_name,
            "--password-stdin",
            *extra,
            stdin=password + "\n",
        )


@pytest.fixture
def vso(tmp_path: Path) -> Vso:
    return Vso(tmp_path)


# volunteer add


def test_volunteer_add_succeeds(vso: Vso) -> None:
    result = vso.add_volunteer("sam", "Sam from the helpline")

    assert result.returncode == 0, result.stderr
    assert "Added volunteer sam" in result.stdout
    assert "Sam from the helpline" in result.stdout


def test_volunteer_add_lowercases_username(vso: Vso) -> None:
    result = vso.add_volunteer("  Sam.Jones ")

    assert result.returncode == 0, result.stderr
    assert "Added volunteer sam.jones" in result.stdout


def test_volunteer_add_duplicate_username(vso: Vso) -> None:
    vso.add_volunteer("sam")

    result = vso.add_volunteer("SAM", "Another Sam")

    assert result.returncode == 1
    assert "'sam' is taken" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    "username",
    ["s", "_sam", ".sam", "sam jones", "sam/jones", "sämi", "s" * 65, ""],
    ids=[
        "one-char",
        "leading-underscore",
        "leading-dot",
        "space",
        "slash",
        "non-ascii",
        "too-long",
        "empty",
    ],
)
def test_volunteer_add_invalid_username(vso: Vso, username: str) -> None:
    result = vso.add_volunteer(username)

    assert result.returncode == 1
    assert "username" in result.stderr
    assert "invalid" in result.stderr


@pytest.mark.parametrize(
    "display_name",
    ["", "   ", "Sam\x07", "Sam\x1b[31m", "\u202eSam", "Sam\u200b", "S" * 41],
    ids=[
        "empty",
        "spaces",
        "bell",
        "escape",
        "right-to-left-override",
        "zero-width-space",
        "too-long",
    ],
)
def test_volunteer_add_invalid_display_name(vso: Vso, display_name: str) -> None:
    result = vso.add_volunteer("sam", display_name)

    assert result.returncode == 1
    assert "display name" in result.stderr


def test_volunteer_add_short_password(vso: Vso) -> None:
    result = vso.add_volunteer("sam", "Sam", "a" * 11)

    assert result.returncode == 1
    assert "at least 12" in result.stderr


def test_volunteer_add_password_at_minimum(vso: Vso) -> None:
    result = vso.add_volunteer("sam", "Sam", "a" * 12)

    assert result.returncode == 0, result.stderr


def test_volunteer_add_no_terminal(vso: Vso) -> None:
    result = vso.run("volunteer", "add", "sam", "--display-name", "Sam")

    assert result.returncode == 1
    assert "--password-stdin" in result.stderr


def test_volunteer_add_failure_stores_nothing(vso: Vso) -> None:
    vso.add_volunteer("sam", "Sam", "short")

    result = vso.run("volunteer", "list")

    assert "No volunteers yet" in result.stdout


def test_volunteer_add_capacity(vso: Vso) -> None:
    vso.add_volunteer("sam", "Sam", PASSWORD, "--capacity", "5")

    result = vso.run("volunteer", "list")

    assert re.search(r"^sam\s+Sam\s+\S+\s+5\s", result.stdout, re.MULTILINE)


def test_volunteer_add_capacity_out_of_range(vso: Vso) -> None:
    result = vso.add_volunteer("sam", "Sam", PASSWORD, "--capacity", "21")

    assert result.returncode == 2
    assert "--capacity" in result.stderr


# volunteer list


def test_volunteer_list_empty(vso: Vso) -> None:
    result = vso.run("volunteer", "list")

    assert result.returncode == 0, result.stderr
    assert "No volunteers yet" in result.stdout


def test_volunteer_list_shows_volunteers(vso: Vso) -> None:
    vso.add_volunteer("sam", "Sam")
    vso.add_volunteer("alex", "Alex", PASSWORD, "--capacity", "3")

    result = vso.run("volunteer", "list")

    assert result.returncode == 0, result.stderr
    assert re.search(r"^alex\s+Alex\s+\S+\s+3\s", result.stdout, re.MULTILINE)
    assert re.search(r"^sam\s+Sam\s+\S+\s+2\s", result.stdout, re.MULTILINE)


def test_volunteer_list_default_capacity_setting(vso: Vso) -> None:
    env = {**vso.env, "VSO_DEFAULT_CAPACITY": "4"}
    vso.run(
        "volunteer",
        "add",
        "sam",
        "--display-name",
        "Sam",
        "--password-stdin",
        stdin=PASSWORD + "\n",
        env=env,
    )

    result = vso.run("volunteer", "list")

    assert re.search(r"^sam\s+Sam\s+\S+\s+4\s", result.stdout, re.MULTILINE)


def test_volunteer_list_hides_password_hash(vso: Vso) -> None:
    vso.add_volunteer("sam", "Sam")
    with sqlite3.connect(vso.database) as db:
        (password_hash,) = db.execute(
            "SELECT password_hash FROM volunteers WHERE username = 'sam'"
        ).fetchone()

    result = vso.run("volunteer", "list")

    assert password_hash not in result.stdout
    assert "$argon2" not in result.stdout
    assert PASSWORD not in result.stdout


# site add and site list


def site_key(output: str) -> str:
    match = re.search(r"with key ([A-Za-z0-9_-]+)\.", output)
    assert match, output
    return match.group(1)


def test_site_add_prints_snippet(vso: Vso) -> None:
    result = vso.run("site", "add", "Helpline", "--origin", "https://www.example.org")

    assert result.returncode == 0, result.stderr
    key = site_key(result.stdout)
    link = re.search(
        r"<a [^>]*data-vso-site=\"([^\"]+)\"[^>]*>Chat with us</a>", result.stdout
    )
    assert link, result.stdout
    assert link.group(1) == key
    assert f'<script async src="{PUBLIC_URL}/widget/loader.js">' in result.stdout


def test_site_add_link_opens_chat(vso: Vso) -> None:
    result = vso.run("site", "add", "Helpline", "--origin", "https://www.example.org")

    key = site_key(result.stdout)
    assert f'href="{PUBLIC_URL}/chat?site={key}"' in result.stdout


@pytest.mark.parametrize(
    ("origin", "expected"),
    [
        ("https://www.example.org/", "https://www.example.org"),
        ("HTTPS://WWW.Example.ORG:443", "https://www.example.org"),
        ("http://partner.example.org:8080", "http://partner.example.org:8080"),
    ],
    ids=["trailing-slash", "uppercase-default-port", "other-port"],
)
def test_site_add_normalises_origin(vso: Vso, origin: str, expected: str) -> None:
    vso.run("site", "add", "Helpline", "--origin", origin)

    result = vso.run("site", "list")

    assert f"allowed origins: {expected}\n" in result.stdout


def test_site_add_several_origins(vso: Vso) -> None:
    vso.run(
        "site",
        "add",
        "Helpline",
        "--origin",
        "https://www.example.org",
        "--origin",
        "https://example.org",
        "--origin",
        "https://WWW.example.org/",
    )

    result = vso.run("site", "list")

    expected = "allowed origins: https://example.org, https://www.example.org\n"
    assert expected in result.stdout


@pytest.mark.parametrize(
    "origin",
    [
        "https://www.example.org/contact",
        "https://www.example.org/?ref=1",
        "https://www.example.org#chat",
        "ftp://www.example.org",
        "javascript:alert(1)",
        "www.example.org",
        "https://user@www.example.org",
    ],
    ids=["path", "query", "fragment", "ftp", "javascript", "no-scheme", "user-info"],
)
def test_site_add_rejects_origin(vso: Vso, origin: str) -> None:
    result = vso.run("site", "add", "Helpline", "--origin", origin)

    assert result.returncode == 1
    assert repr(origin) in result.stderr
    assert result.stdout == ""


def test_site_add_rejected_stores_nothing(vso: Vso) -> None:
    vso.run("site", "add", "Helpline", "--origin", "https://www.example.org/page")

    result = vso.run("site", "list")

    assert "No sites yet" in result.stdout


def test_site_add_empty_name(vso: Vso) -> None:
    result = vso.run("site", "add", "  ", "--origin", "https://www.example.org")

    assert result.returncode == 1
    assert "site name" in result.stderr


def test_site_add_name_with_bidi_override(vso: Vso) -> None:
    result = vso.run("site", "add", "Bad\u202eName", "--origin", "https://a.example")

    assert result.returncode == 1
    assert "format characters" in result.stderr


def test_normalise_origin_internationalised_host() -> None:
    assert normalise_origin("https://bücher.example") == "https://xn--bcher-kva.example"


def test_serve_busy_port_fails_before_demo(vso: Vso) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = {**vso.env, "VSO_PORT": str(port)}
        result = vso.run("serve", env=env)

    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr
    assert "password" not in result.stdout


def test_database_file_private(vso: Vso) -> None:
    vso.add_volunteer("alex")

    mode = vso.database.stat().st_mode & 0o777

    assert mode == 0o600


def test_site_list_empty(vso: Vso) -> None:
    result = vso.run("site", "list")

    assert result.returncode == 0, result.stderr
    assert "No sites yet" in result.stdout


def test_site_list_shows_site_and_snippet(vso: Vso) -> None:
    added = vso.run("site", "add", "Helpline", "--origin", "https://www.example.org")
    key = site_key(added.stdout)

    result = vso.run("site", "list")

    assert result.returncode == 0, result.stderr
    assert f"Helpline (key {key})" in result.stdout
    assert f'data-vso-site="{key}" data-vso-close="Close chat">Chat with us</a>' in (
        result.stdout
    )
    assert f'<script async src="{PUBLIC_URL}/widget/loader.js">' in result.stdout
    assert f'<iframe src="{PUBLIC_URL}/chat?site={key}"' in result.stdout


def test_site_add_prints_inline_snippet(vso: Vso) -> None:
    result = vso.run("site", "add", "Helpline", "--origin", "https://www.example.org")
    key = site_key(result.stdout)

    iframe = re.search(r"<iframe [^>]*></iframe>", result.stdout)
    assert iframe, result.stdout
    assert f'src="{PUBLIC_URL}/chat?site={key}"' in iframe.group(0)
    assert 'title="Chat with a volunteer"' in iframe.group(0)
    assert 'referrerpolicy="no-referrer"' in iframe.group(0)
    assert "sandbox" not in iframe.group(0)


# Configuration errors


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("VSO_PORT", "0"),
        ("VSO_PUBLIC_URL", "ftp://chat.example.org"),
        ("VSO_SECRET_KEY", "short"),
        ("VSO_UNKNOWN", "1"),
    ],
)
def test_vso_invalid_configuration_exits_2(vso: Vso, variable: str, raw: str) -> None:
    result = vso.run("site", "list", env={**vso.env, variable: raw})

    assert result.returncode == 2
    assert "invalid configuration" in result.stderr
    assert variable in result.stderr
    assert result.stdout == ""


def test_vso_no_command_exits_2(vso: Vso) -> None:
    result = vso.run()

    assert result.returncode == 2
    assert "usage: vso" in result.stderr


# normalise_origin


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://www.example.org", "https://www.example.org"),
        ("https://www.example.org/", "https://www.example.org"),
        ("  https://www.example.org \n", "https://www.example.org"),
        ("https://www.example.org:443", "https://www.example.org"),
        ("http://www.example.org:80", "http://www.example.org"),
        ("https://www.example.org:80", "https://www.example.org:80"),
        ("http://www.example.org:443", "http://www.example.org:443"),
        ("https://www.example.org:8443", "https://www.example.org:8443"),
        ("HTTPS://WWW.EXAMPLE.ORG", "https://www.example.org"),
        ("https://Www.Example.Org:8443/", "https://www.example.org:8443"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("http://[::1]:80", "http://[::1]"),
        ("https://[2001:DB8::1]", "https://[2001:db8::1]"),
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
    ],
    ids=[
        "plain",
        "trailing-slash",
        "whitespace",
        "https-default-port",
        "http-default-port",
        "https-on-80",
        "http-on-443",
        "other-port",
        "uppercase",
        "mixed-case-port",
        "ipv6-port",
        "ipv6-default-port",
        "ipv6-uppercase",
        "ipv4",
    ],
)
def test_normalise_origin_valid(text: str, expected: str) -> None:
    assert normalise_origin(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "www.example.org",
        "//www.example.org",
        "ftp://www.example.org",
        "ws://www.example.org",
        "https://",
        "https://www.example.org/page",
        "https://www.example.org//",
        "https://www.example.org?x=1",
        "https://www.example.org#top",
        "https://user@www.example.org",
        "https://user:secret@www.example.org",
        "https://www.example.org:99999",
        "https://www.example.org:http",
        "http://*",
        "https://*.example.org",
        "https://exa mple.org",
        "https://example.org;script-src",
        'https://ex"ample.org',
        "https://-example.org",
    ],
    ids=[
        "empty",
        "no-scheme",
        "scheme-relative",
        "ftp",
        "websocket",
        "no-host",
        "path",
        "double-slash",
        "query",
        "fragment",
        "user",
        "user-password",
        "port-out-of-range",
        "port-not-number",
        "wildcard",
        "wildcard-subdomain",
        "space",
        "csp-separator",
        "quote",
        "leading-dash",
    ],
)
def test_normalise_origin_invalid(text: str) -> None:
    with pytest.raises(ValueError):
        normalise_origin(text)
