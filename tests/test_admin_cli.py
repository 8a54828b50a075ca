"""``vso admin add``: the first admin account, from the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.relayserver import RelayServer

PASSWORD = "lantern-orchard-velvet-7"


@pytest.fixture
def server(tmp_path: Path) -> RelayServer:
    """Settings and a database for ``vso`` commands; nothing is served."""
    return RelayServer(tmp_path)


def admin_add(server: RelayServer, username: str, password: str) -> tuple[int, str]:
    result = server.cli(
        "admin",
        "add",
        username,
        "--display-name",
        "Robin",
        "--password-stdin",
        stdin=password + "\n",
    )
    return result.returncode, result.stdout + result.stderr


def test_admin_add_creates_admin(server: RelayServer) -> None:
    code, output = admin_add(server, "robin", PASSWORD)
    assert code == 0, output
    assert "two-factor" in output
    listed = server.cli("volunteer", "list").stdout
    assert "robin" in listed
    assert " admin " in listed


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short", "use at least 12"),
        ("password1234", "common passwords"),
        ("robin-forever-and-ever", "your name or username"),
    ],
)
def test_admin_add_rejects_weak_password(
    server: RelayServer, password: str, message: str
) -> None:
    code, output = admin_add(server, "robin", password)
    assert code == 1
    assert message in output
    assert "robin" not in server.cli("volunteer", "list").stdout


def test_admin_add_without_terminal_explains(server: RelayServer) -> None:
    result = server.cli("admin", "add", "robin", "--display-name", "Robin")
    assert result.returncode == 1
    assert "--password-stdin" in result.stderr
