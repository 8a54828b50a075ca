"""Copies of the database taken while the relay runs (``vso backup``).

SQLite's online backup API copies every page inside one read transaction, so the
copy is the database as it was at one moment, including what only the WAL file
contains yet. In WAL mode a reader does not block the relay's writes. The copy
is written under a temporary name, checked with ``PRAGMA integrity_check``,
synced and then linked to its final name, so a file with that name is always a
complete backup and an existing file is never overwritten. The copy is one
self-contained file (rollback journal mode); the relay turns WAL on again when
it opens a restored copy.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from relay.store import BUSY_TIMEOUT_MS

logger = logging.getLogger("relay.backup")

# Backups hold the same conversations as the database: only their owner may read them.
BACKUP_MODE = 0o600


class BackupError(Exception):
    """A backup that could not be taken. Its message gives the reason and next step."""


@dataclass(frozen=True, slots=True)
class Backup:
    """A finished backup: where it is, its size and what it contains."""

    path: Path
    size_bytes: int
    conversations: int
    messages: int


def back_up(database: Path, target: Path) -> Backup:
    """Copy ``database`` to the new file ``target`` and return what was copied.

    Raises ``BackupError`` when the database is missing, ``target`` exists or
    its folder does not, or the copy fails its integrity check. Nothing is left
    at ``target`` then.
    """
    if not database.is_file():
        raise BackupError(f"The database {database} does not exist.")
    if target.exists():
        raise BackupError(f"{target} exists already; choose a new file name.")
    if not target.parent.is_dir():
        raise BackupError(f"The folder {target.parent} does not exist.")
    partial = target.with_name(f".{target.name}.partial")
    try:
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, BACKUP_MODE)
    except FileExistsError:
        raise BackupError(
            f"{partial} exists: another backup to {target} is running, or one was"
            " interrupted. Remove it when no backup is running, then try again."
        ) from None
    except OSError as error:
        raise BackupError(f"Creating {partial} failed: {error.strerror}.") from None
    os.close(descriptor)
    try:
        backup = _copy(database, partial)
        os.link(partial, target)
        _sync(target.parent)
    except FileExistsError:
        raise BackupError(
            f"{target} appeared during the backup; nothing was replaced."
        ) from None
    finally:
        partial.unlink(missing_ok=True)
    logger.info("database backed up: %d bytes, %d conversations", backup[0], backup[1])
    return Backup(target, *backup)


def _copy(database: Path, target: Path) -> tuple[int, int, int]:
    """Copy, check and sync; return the size and the counts of the copy."""
    timeout = BUSY_TIMEOUT_MS / 1000
    try:
        with (
            contextlib.closing(sqlite3.connect(database, timeout=timeout)) as source,
            contextlib.closing(sqlite3.connect(target)) as copy,
        ):
            source.backup(copy)
            copy.execute("PRAGMA journal_mode = DELETE")
            result = copy.execute("PRAGMA integrity_check").fetchone()[0]
            if result != "ok":
                logger.error("database backup failed its integrity check: %s", result)
                raise BackupError(
                    f"The copy failed SQLite's integrity check ({result}), so the"
                    " database itself may be damaged. Run PRAGMA integrity_check on it."
                )
            conversations = copy.execute(
                "SELECT COUNT(*) FROM conversations"
            ).fetchone()
            messages = copy.execute("SELECT COUNT(*) FROM messages").fetchone()
        _sync(target)
    except (sqlite3.Error, OSError) as error:
        logger.error("database backup failed: %s", error)
        raise BackupError(f"Copying {database} failed: {error}.") from None
    return target.stat().st_size, int(conversations[0]), int(messages[0])


def _sync(path: Path) -> None:
    """Flush a file, or a folder's list of names, to the disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
