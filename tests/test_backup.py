"""``vso backup``: a copy of the database taken while the relay writes to it,
restored the way docs/deploy.md describes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import stat
from pathlib import Path

import pytest

from tests.relayserver import RelayServer
from tests.test_cli import Vso
from tests.test_relay import (
    demo_volunteer,
    open_chat,
    receive_messages,
    resume,
    running_relay,
    visitor_send,
)

pytestmark = pytest.mark.anyio

# Messages the visitor keeps sending while the backup runs, at most.
MESSAGES_DURING_BACKUP = 200


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if "partial" in path.name)


async def test_backup_while_writing_restores_messages(tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    backups.mkdir()
    target = backups / "vso.sqlite3"
    (tmp_path / "relay").mkdir()
    async with running_relay(tmp_path / "relay") as relay:
        chat = await open_chat(relay, await demo_volunteer(relay))
        for number in range(1, 4):
            await chat.visitor.send(
                visitor_send(f"before-{number}", f"Before {number}")
            )
            await chat.visitor.expect("ack", client_id=f"before-{number}")

        async def keep_sending() -> None:
            for number in range(MESSAGES_DURING_BACKUP):
                await chat.visitor.send(visitor_send(f"during-{number}", "During"))
                await chat.visitor.expect("ack", client_id=f"during-{number}")

        sender = asyncio.create_task(keep_sending())
        result = await asyncio.to_thread(relay.cli, "backup", str(target))
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender

    assert result.returncode == 0, result.stderr
    assert f"to {target}" in result.stdout
    assert "data key" in result.stdout
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert leftovers(backups) == []
    with contextlib.closing(sqlite3.connect(target)) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert copy.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        client_ids = {row[0] for row in copy.execute("SELECT client_id FROM messages")}
    assert {"before-1", "before-2", "before-3"} <= client_ids

    # Restore as docs/deploy.md describes: the relay stopped, the copy in place of
    # the database, the WAL and shared-memory files removed.
    restored = RelayServer(tmp_path / "relay")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{restored.database}{suffix}").unlink(missing_ok=True)
    os.link(target, restored.database)
    await asyncio.to_thread(restored.start)
    try:
        transcript = await resume(restored, chat.token, last_seq=0)
        messages = await receive_messages(transcript, 3)
    finally:
        await asyncio.to_thread(restored.stop, signal.SIGTERM)

    assert [frame["body"] for frame in messages] == ["Before 1", "Before 2", "Before 3"]


def test_backup_never_replaces_a_file(tmp_path: Path) -> None:
    vso = Vso(tmp_path)
    assert vso.run("volunteer", "list").returncode == 0
    target = tmp_path / "existing.sqlite3"
    target.write_bytes(b"an earlier backup")

    result = vso.run("backup", str(target))

    assert result.returncode == 1
    assert "exists already" in result.stderr
    assert target.read_bytes() == b"an earlier backup"


def test_backup_into_missing_folder(tmp_path: Path) -> None:
    vso = Vso(tmp_path)
    assert vso.run("volunteer", "list").returncode == 0

    result = vso.run("backup", str(tmp_path / "no-such-folder" / "copy.sqlite3"))

    assert result.returncode == 1
    assert "no-such-folder does not exist" in result.stderr


def test_backup_without_database(tmp_path: Path) -> None:
    vso = Vso(tmp_path)

    result = vso.run("backup", str(tmp_path / "copy.sqlite3"))

    assert result.returncode == 1
    assert "vso.sqlite3 does not exist" in result.stderr
    assert not (tmp_path / "copy.sqlite3").exists()


def test_backup_of_file_that_is_no_database(tmp_path: Path) -> None:
    vso = Vso(tmp_path)
    vso.database.write_text("not a database\n" * 100)
    target = tmp_path / "copy.sqlite3"

    result = vso.run("backup", str(target))

    assert result.returncode == 1
    assert "failed: file is not a database" in result.stderr
    assert "Traceback" not in result.stderr
    assert not target.exists()
    assert leftovers(tmp_path) == []
