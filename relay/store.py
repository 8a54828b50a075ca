"""SQLite storage through aiosqlite: schema, migrations and every query.

Nothing outside this module writes SQL, so that another store (PostgreSQL) can
stand beside it. Writes run one at a time under a lock, each in its own
``BEGIN IMMEDIATE`` transaction; the database runs in WAL mode.

Messages are the exception: ``add_message`` calls that arrive while a write is
under way are stored together in the next transaction (group commit), by one
writer thread with its own connection, and each call returns only after that
transaction committed. With ``synchronous = NORMAL`` a committed transaction
survives the relay's crash; a power cut can lose the last ones.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiosqlite

from relay.crypto import PREFIX as SEALED_PREFIX
from relay.crypto import DataCipher, DecryptionError

logger = logging.getLogger("relay.store")

BUSY_TIMEOUT_MS = 5000
# Checkpoints copy the WAL into the database file and sync it to disk, which
# can take tens of milliseconds; they run in a thread of their own at this
# interval, so that no commit, and no ack, waits for one.
CHECKPOINT_SECONDS = 1.0

MIGRATIONS: tuple[str, ...] = (
    # 1: volunteers, sessions, sites, conversations and messages.
    """
    CREATE TABLE volunteers (
        id INTEGER PRIMARY KEY,
        username TEXT NOT NULL UNIQUE,
        display_name TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        role TEXT NOT NULL DEFAULT 'volunteer'
            CHECK (role IN ('volunteer', 'supervisor', 'admin')),
        capacity INTEGER NOT NULL DEFAULT 2 CHECK (capacity >= 1),
        active INTEGER NOT NULL DEFAULT 1,
        created_at TEXT NOT NULL
    );
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        volunteer_id INTEGER NOT NULL REFERENCES volunteers(id) ON DELETE CASCADE,
        created_at TEXT NOT NULL
    );
    CREATE TABLE sites (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        origins TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        site_id INTEGER NOT NULL REFERENCES sites(id),
        channel TEXT NOT NULL DEFAULT 'chat',
        status TEXT NOT NULL
            CHECK (status IN ('queued', 'active', 'ended', 'abandoned')),
        token_hash TEXT NOT NULL UNIQUE,
        volunteer_id INTEGER REFERENCES volunteers(id),
        queue_key REAL NOT NULL,
        last_seq INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        assigned_at TEXT,
        ended_at TEXT,
        end_reason TEXT
    );
    CREATE INDEX conversations_open ON conversations (status)
        WHERE status IN ('queued', 'active');
    CREATE TABLE messages (
        conversation_id TEXT NOT NULL
            REFERENCES conversations(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        sender TEXT NOT NULL CHECK (sender IN ('visitor', 'volunteer')),
        volunteer_id INTEGER REFERENCES volunteers(id),
        client_id TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (conversation_id, seq),
        UNIQUE (conversation_id, sender, client_id)
    );
    CREATE TABLE health (id INTEGER PRIMARY KEY CHECK (id = 1), checked_at TEXT);
    INSERT INTO health (id, checked_at) VALUES (1, NULL);
    """,
    # 2: the "Available" switch, so that a restart does not turn volunteers off.
    """
    ALTER TABLE volunteers ADD COLUMN available INTEGER NOT NULL DEFAULT 0;
    """,
    # 3: each site's Quick exit address, and counts that outlive deleted chats.
    """
    ALTER TABLE sites ADD COLUMN exit_url TEXT NOT NULL
        DEFAULT 'https://www.google.com/';
    CREATE TABLE conversation_counts (
        day TEXT NOT NULL,
        site_id INTEGER NOT NULL,
        channel TEXT NOT NULL,
        status TEXT NOT NULL,
        end_reason TEXT NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (day, site_id, channel, status, end_reason)
    );
    """,
    # 3: second factor for volunteers, and session idle times.
    """
    ALTER TABLE volunteers ADD COLUMN totp_secret TEXT;
    ALTER TABLE volunteers ADD COLUMN totp_last_step INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE recovery_codes (
        volunteer_id INTEGER NOT NULL REFERENCES volunteers(id) ON DELETE CASCADE,
        code_hash TEXT NOT NULL,
        used_at TEXT,
        PRIMARY KEY (volunteer_id, code_hash)
    );
    ALTER TABLE sessions ADD COLUMN last_seen_at TEXT;
    """,
)

# Copies the conversations a deletion is about to remove into the daily counts.
# The caller appends the WHERE clause that selects them.
_COUNT_BEFORE_DELETE = (
    "INSERT INTO conversation_counts"
    " (day, site_id, channel, status, end_reason, count)"
    " SELECT substr(created_at, 1, 10), site_id, channel, status,"
    " COALESCE(end_reason, ''), COUNT(*) FROM conversations {where}"
    " GROUP BY 1, 2, 3, 4, 5"
    " ON CONFLICT (day, site_id, channel, status, end_reason)"
    " DO UPDATE SET count = count + excluded.count"
)


def utc_now() -> str:
    """Return the current UTC time as ISO 8601 with milliseconds and ``Z``."""
    return utc_ago(0)


def utc_ago(seconds: float) -> str:
    """Return the UTC time ``seconds`` ago, in the format of ``utc_now``."""
    moment = datetime.now(UTC) - timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class StoreError(Exception):
    """The database failed; the operation did not happen."""


class ConversationClosedError(Exception):
    """The conversation has ended, so it takes no more messages."""


@dataclass(frozen=True)
class Volunteer:
    id: int
    username: str
    display_name: str
    password_hash: str
    role: str
    capacity: int
    active: bool
    created_at: str
    totp_enabled: bool = False


@dataclass(frozen=True)
class Site:
    id: int
    key: str
    name: str
    origins: tuple[str, ...]
    created_at: str
    exit_url: str


@dataclass(frozen=True)
class Conversation:
    id: str
    site_id: int
    status: str
    volunteer_id: int | None
    queue_key: float
    last_seq: int
    created_at: str
    assigned_at: str | None
    ended_at: str | None
    end_reason: str | None

    @property
    def is_open(self) -> bool:
        return self.status in ("queued", "active")


@dataclass(frozen=True)
class Message:
    conversation_id: str
    seq: int
    sender: str
    client_id: str
    body: str
    created_at: str
    # Internal: the volunteer who wrote it, never sent to a visitor.
    volunteer_id: int | None = None


def _volunteer(row: sqlite3.Row) -> Volunteer:
    return Volunteer(
        id=row["id"],
        username=row["username"],
        display_name=row["display_name"],
        password_hash=row["password_hash"],
        role=row["role"],
        capacity=row["capacity"],
        active=bool(row["active"]),
        created_at=row["created_at"],
        totp_enabled=row["totp_secret"] is not None,
    )


def _site(row: sqlite3.Row) -> Site:
    return Site(
        id=row["id"],
        key=row["key"],
        name=row["name"],
        origins=tuple(json.loads(row["origins"])),
        created_at=row["created_at"],
        exit_url=row["exit_url"],
    )


def _conversation(row: sqlite3.Row) -> Conversation:
    return Conversation(
        id=row["id"],
        site_id=row["site_id"],
        status=row["status"],
        volunteer_id=row["volunteer_id"],
        queue_key=row["queue_key"],
        last_seq=row["last_seq"],
        created_at=row["created_at"],
        assigned_at=row["assigned_at"],
        ended_at=row["ended_at"],
        end_reason=row["end_reason"],
    )


def _message_context(conversation_id: str, seq: int) -> str:
    """Return the associated data that binds a sealed body to its row."""
    return f"message:{conversation_id}:{seq}"


class Store:
    """One SQLite database file, opened with ``await Store.open(path)``.

    Message bodies are sealed with ``cipher`` on write and opened on read; a
    store opened without one handles everything but messages.
    """

    def __init__(
        self, db: aiosqlite.Connection, path: Path, cipher: DataCipher | None
    ) -> None:
        self._db = db
        self._path = path
        self._cipher = cipher
        self._write_lock = asyncio.Lock()
        self._writer_db: sqlite3.Connection | None = None
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="vso-writer")
        self._pending: list[_PendingMessage] = []
        self._flusher: asyncio.Task[None] | None = None
        self._checkpoint_db: sqlite3.Connection | None = None
        self._checkpointer = ThreadPoolExecutor(1, thread_name_prefix="vso-checkpoint")
        self._checkpoints: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, path: Path, cipher: DataCipher | None = None) -> Store:
        """Open (creating if needed) the database and apply pending migrations."""
        # Only the relay's user may read the conversations; SQLite gives the
        # -wal and -shm files the database file's mode.
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        try:
            db = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as error:
            raise StoreError(f"Cannot open the database {path}: {error}") from error
        db.row_factory = sqlite3.Row
        store = cls(db, path, cipher)
        try:
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute("PRAGMA synchronous = NORMAL")
            await db.execute("PRAGMA foreign_keys = ON")
            await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await store._migrate()
            await db.execute("PRAGMA wal_autocheckpoint = 0")
            loop = asyncio.get_running_loop()
            store._writer_db = await loop.run_in_executor(
                store._writer, _connect_writer, path
            )
            store._checkpoint_db = await loop.run_in_executor(
                store._checkpointer, _connect_writer, path
            )
        except BaseException:
            await db.close()
            store._writer.shutdown(wait=False)
            store._checkpointer.shutdown(wait=False)
            raise
        store._checkpoints = asyncio.create_task(
            store._checkpoint_forever(), name="store-checkpoints"
        )
        return store

    async def _checkpoint_forever(self) -> None:
        """Checkpoint the WAL every ``CHECKPOINT_SECONDS`` until the store closes."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(CHECKPOINT_SECONDS)
            if self._checkpoint_db is None:
                return
            try:
                await loop.run_in_executor(
                    self._checkpointer,
                    self._checkpoint_db.execute,
                    "PRAGMA wal_checkpoint(PASSIVE)",
                )
            except sqlite3.Error as error:
                # The WAL keeps every commit; the next attempt catches up.
                logger.error("checkpointing the database failed: %s", error)

    async def close(self) -> None:
        """Store the messages still pending, then close every connection."""
        if self._checkpoints is not None:
            self._checkpoints.cancel()
            await asyncio.gather(self._checkpoints, return_exceptions=True)
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        loop = asyncio.get_running_loop()
        async with self._write_lock:
            if self._checkpoint_db is not None:
                await loop.run_in_executor(
                    self._checkpointer, self._checkpoint_db.close
                )
                self._checkpoint_db = None
            self._checkpointer.shutdown(wait=True)
            if self._writer_db is not None:
                await loop.run_in_executor(self._writer, self._writer_db.close)
            self._writer.shutdown(wait=True)
            # The last connection to close checkpoints the WAL into the file.
            await self._db.close()

    async def _migrate(self) -> None:
        async with self._db.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        version = int(row[0]) if row else 0
        if version > len(MIGRATIONS):
            raise StoreError(
                f"The database {self._path} is at schema version {version}, newer than"
                f" this relay's {len(MIGRATIONS)}; upgrade the relay."
            )
        for number in range(version + 1, len(MIGRATIONS) + 1):
            async with self._transaction() as db:
                await db.executescript_in_transaction(MIGRATIONS[number - 1])
                await db.execute(f"PRAGMA user_version = {number}")
            logger.info("applied migration %d to %s", number, self._path)

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[_Tx]:
        async with self._write_lock:
            try:
                await self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as error:
                raise StoreError(f"Cannot start a transaction: {error}") from error
            try:
                yield _Tx(self._db)
                await self._db.execute("COMMIT")
            except BaseException as error:
                # SQLite has already rolled back after some errors (disk full).
                if self._db.in_transaction:
                    try:
                        await self._db.execute("ROLLBACK")
                    except sqlite3.Error:
                        logger.exception("rollback failed")
                if isinstance(error, sqlite3.Error):
                    raise StoreError(f"The database write failed: {error}") from error
                raise

    async def _fetchone(
        self, sql: str, params: tuple[Any, ...] = ()
    ) -> sqlite3.Row | None:
        try:
            async with self._db.execute(sql, params) as cursor:
                row: sqlite3.Row | None = await cursor.fetchone()
                return row
        except sqlite3.Error as error:
            raise StoreError(f"The database read failed: {error}") from error

    async def _fetchall(
        self, sql: str, params: tuple[Any, ...] = ()
    ) -> list[sqlite3.Row]:
        try:
            async with self._db.execute(sql, params) as cursor:
                return list(await cursor.fetchall())
        except sqlite3.Error as error:
            raise StoreError(f"The database read failed: {error}") from error

    async def check_writable(self) -> None:
        """Write one row, proving the database accepts writes; raises StoreError."""
        async with self._transaction() as tx:
            await tx.execute(
                "UPDATE health SET checked_at = ? WHERE id = 1", (utc_now(),)
            )

    # Volunteers and sessions

    async def add_volunteer(
        self,
        username: str,
        display_name: str,
        password_hash: str,
        capacity: int,
        role: str = "volunteer",
    ) -> Volunteer:
        """Insert a volunteer; raises ``ValueError`` when the username is taken."""
        try:
            async with self._transaction() as tx:
                cursor = await tx.execute(
                    "INSERT INTO volunteers (username, display_name, password_hash,"
                    " capacity, role, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (username, display_name, password_hash, capacity, role, utc_now()),
                )
                volunteer_id = cursor.lastrowid
        except StoreError as error:
            if isinstance(error.__cause__, sqlite3.IntegrityError):
                raise ValueError(f"The username {username!r} is taken.") from None
            raise
        volunteer = await self.get_volunteer(int(volunteer_id or 0))
        if volunteer is None:
            raise StoreError("The new volunteer was not found after inserting it.")
        return volunteer

    async def get_volunteer(self, volunteer_id: int) -> Volunteer | None:
        row = await self._fetchone(
            "SELECT * FROM volunteers WHERE id = ?", (volunteer_id,)
        )
        return _volunteer(row) if row else None

    async def get_volunteer_by_username(self, username: str) -> Volunteer | None:
        row = await self._fetchone(
            "SELECT * FROM volunteers WHERE username = ?", (username,)
        )
        return _volunteer(row) if row else None

    async def list_volunteers(self) -> list[Volunteer]:
        rows = await self._fetchall("SELECT * FROM volunteers ORDER BY username")
        return [_volunteer(row) for row in rows]

    async def set_volunteer_available(self, volunteer_id: int, available: bool) -> None:
        async with self._transaction() as tx:
            await tx.execute(
                "UPDATE volunteers SET available = ? WHERE id = ?",
                (int(available), volunteer_id),
            )

    async def list_available_volunteers(self) -> list[Volunteer]:
        """Return the active volunteers whose "Available" switch was on."""
        rows = await self._fetchall(
            "SELECT * FROM volunteers WHERE available = 1 AND active = 1"
        )
        return [_volunteer(row) for row in rows]

    async def update_password_hash(self, volunteer_id: int, password_hash: str) -> None:
        async with self._transaction() as tx:
            await tx.execute(
                "UPDATE volunteers SET password_hash = ? WHERE id = ?",
                (password_hash, volunteer_id),
            )

    async def create_session(self, session_id: str, volunteer_id: int) -> None:
        now = utc_now()
        async with self._transaction() as tx:
            await tx.execute(
                "INSERT INTO sessions (id, volunteer_id, created_at, last_seen_at)"
                " VALUES (?, ?, ?, ?)",
                (session_id, volunteer_id, now, now),
            )

    async def get_session_volunteer(
        self, session_id: str, idle_since: str | None = None
    ) -> Volunteer | None:
        """Return the active volunteer a session belongs to, or None.

        With ``idle_since`` (ISO 8601 UTC), a session last seen before it counts
        as expired and is deleted; a live one is marked seen now.
        """
        row = await self._fetchone(
            "SELECT volunteers.*, sessions.last_seen_at AS session_seen_at"
            " FROM sessions JOIN volunteers ON volunteers.id = sessions.volunteer_id"
            " WHERE sessions.id = ? AND volunteers.active = 1",
            (session_id,),
        )
        if row is None:
            return None
        if idle_since is not None:
            if (row["session_seen_at"] or "") < idle_since:
                await self.delete_session(session_id)
                return None
            async with self._transaction() as tx:
                await tx.execute(
                    "UPDATE sessions SET last_seen_at = ? WHERE id = ?",
                    (utc_now(), session_id),
                )
        return _volunteer(row)

    async def delete_session(self, session_id: str) -> None:
        async with self._transaction() as tx:
            await tx.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

    # Second factor

    async def set_totp(
        self, volunteer_id: int, secret: str, recovery_code_hashes: list[str]
    ) -> None:
        """Store a volunteer's TOTP secret, sealed, with new recovery codes."""
        if self._cipher is None:
            raise StoreError("The store was opened without a data key.")
        sealed = self._cipher.encrypt(secret, f"totp:{volunteer_id}")
        async with self._transaction() as tx:
            await tx.execute(
                "UPDATE volunteers SET totp_secret = ?, totp_last_step = 0"
                " WHERE id = ?",
                (sealed, volunteer_id),
            )
            await tx.execute(
                "DELETE FROM recovery_codes WHERE volunteer_id = ?", (volunteer_id,)
            )
            for code_hash in recovery_code_hashes:
                await tx.execute(
                    "INSERT INTO recovery_codes (volunteer_id, code_hash)"
                    " VALUES (?, ?)",
                    (volunteer_id, code_hash),
                )

    async def get_totp_secret(self, volunteer_id: int) -> str | None:
        """Return a volunteer's TOTP secret, or None when they have none."""
        row = await self._fetchone(
            "SELECT totp_secret FROM volunteers WHERE id = ?", (volunteer_id,)
        )
        if row is None or row[0] is None:
            return None
        if self._cipher is None:
            raise StoreError("The store was opened without a data key.")
        try:
            return self._cipher.decrypt(row[0], f"totp:{volunteer_id}")
        except DecryptionError as error:
            raise StoreError(
                f"The TOTP secret of volunteer {volunteer_id} cannot be decrypted:"
                f" {error}"
            ) from error

    async def use_totp_step(self, volunteer_id: int, step: int) -> bool:
        """Record a used time step; False when it, or a later one, was used."""
        async with self._transaction() as tx:
            cursor = await tx.execute(
                "UPDATE volunteers SET totp_last_step = ?"
                " WHERE id = ? AND totp_last_step < ?",
                (step, volunteer_id, step),
            )
            return cursor.rowcount == 1

    async def use_recovery_code(self, volunteer_id: int, code_hash: str) -> bool:
        """Mark an unused recovery code used; False when unknown or used."""
        async with self._transaction() as tx:
            cursor = await tx.execute(
                "UPDATE recovery_codes SET used_at = ?"
                " WHERE volunteer_id = ? AND code_hash = ? AND used_at IS NULL",
                (utc_now(), volunteer_id, code_hash),
            )
            return cursor.rowcount == 1

    # Sites

    async def add_site(
        self, key: str, name: str, origins: list[str], exit_url: str
    ) -> Site:
        async with self._transaction() as tx:
            cursor = await tx.execute(
                "INSERT INTO sites (key, name, origins, created_at, exit_url)"
                " VALUES (?, ?, ?, ?, ?)",
                (key, name, json.dumps(origins), utc_now(), exit_url),
            )
            site_id = cursor.lastrowid
        row = await self._fetchone("SELECT * FROM sites WHERE id = ?", (site_id,))
        if row is None:
            raise StoreError("The new site was not found after inserting it.")
        return _site(row)

    async def get_site_by_key(self, key: str) -> Site | None:
        row = await self._fetchone("SELECT * FROM sites WHERE key = ?", (key,))
        return _site(row) if row else None

    async def get_site(self, site_id: int) -> Site | None:
        row = await self._fetchone("SELECT * FROM sites WHERE id = ?", (site_id,))
        return _site(row) if row else None

    async def list_sites(self) -> list[Site]:
        rows = await self._fetchall("SELECT * FROM sites ORDER BY id")
        return [_site(row) for row in rows]

    # Conversations

    async def create_conversation(
        self, conversation_id: str, site_id: int, token_hash: str
    ) -> Conversation:
        """Insert a queued conversation at the back of the queue."""
        now = utc_now()
        async with self._transaction() as tx:
            await tx.execute(
                "INSERT INTO conversations"
                " (id, site_id, status, token_hash, queue_key, created_at)"
                " VALUES (?, ?, 'queued', ?,"
                "  (SELECT COALESCE(MAX(queue_key), 0) + 1 FROM conversations), ?)",
                (conversation_id, site_id, token_hash, now),
            )
        conversation = await self.get_conversation(conversation_id)
        if conversation is None:
            raise StoreError("The new conversation was not found after inserting it.")
        return conversation

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        row = await self._fetchone(
            "SELECT * FROM conversations WHERE id = ?", (conversation_id,)
        )
        return _conversation(row) if row else None

    async def get_conversation_by_token_hash(
        self, token_hash: str
    ) -> Conversation | None:
        row = await self._fetchone(
            "SELECT * FROM conversations WHERE token_hash = ?", (token_hash,)
        )
        return _conversation(row) if row else None

    async def list_open_conversations(self) -> list[Conversation]:
        """Return queued and active conversations, queued ones in queue order."""
        rows = await self._fetchall(
            "SELECT * FROM conversations WHERE status IN ('queued', 'active')"
            " ORDER BY queue_key"
        )
        return [_conversation(row) for row in rows]

    async def assign_conversation(
        self, conversation_id: str, volunteer_id: int
    ) -> bool:
        """Mark a queued conversation active with a volunteer.

        Returns False, changing nothing, when the conversation is not queued; the
        condition in the UPDATE keeps a second relay process from assigning it too.
        """
        async with self._transaction() as tx:
            cursor = await tx.execute(
                "UPDATE conversations SET status = 'active', volunteer_id = ?,"
                " assigned_at = ? WHERE id = ? AND status = 'queued'",
                (volunteer_id, utc_now(), conversation_id),
            )
            return cursor.rowcount == 1

    async def requeue_conversations(self, conversation_ids: list[str]) -> None:
        """Put active conversations back at the front of the queue, in this order."""
        if not conversation_ids:
            return
        async with self._transaction() as tx:
            row = await tx.fetchone(
                "SELECT COALESCE(MIN(queue_key), 0) FROM conversations"
            )
            front = float(row[0]) if row else 0.0
            count = len(conversation_ids)
            for index, conversation_id in enumerate(conversation_ids):
                await tx.execute(
                    "UPDATE conversations SET status = 'queued', volunteer_id = NULL,"
                    " assigned_at = NULL, queue_key = ?"
                    " WHERE id = ? AND status = 'active'",
                    (front - count + index, conversation_id),
                )

    async def end_conversation(
        self, conversation_id: str, status: str, reason: str
    ) -> bool:
        """Close an open conversation as ``ended`` or ``abandoned``.

        Returns False when it was already closed.
        """
        if status not in ("ended", "abandoned"):
            raise ValueError(f"status must be 'ended' or 'abandoned', not {status!r}")
        async with self._transaction() as tx:
            cursor = await tx.execute(
                "UPDATE conversations SET status = ?, end_reason = ?, ended_at = ?"
                " WHERE id = ? AND status IN ('queued', 'active')",
                (status, reason, utc_now(), conversation_id),
            )
            return cursor.rowcount == 1

    # Messages

    async def add_message(
        self,
        conversation_id: str,
        sender: str,
        client_id: str,
        body: str,
        volunteer_id: int | None = None,
    ) -> tuple[Message, bool]:
        """Store a message with the conversation's next sequence number.

        Returns the message and True, or the message stored earlier with the same
        sender and ``client_id`` and False. Raises ``ConversationClosedError`` when
        the conversation is over or unknown, ``StoreError`` when the write fails.
        """
        pending = _PendingMessage(
            conversation_id, sender, client_id, body, volunteer_id
        )
        self._pending.append(pending)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(
                self._flush_messages(), name="store-group-commit"
            )
        return await pending.future

    async def _flush_messages(self) -> None:
        """Store pending messages, one transaction per batch, until none is left."""
        loop = asyncio.get_running_loop()
        while self._pending:
            batch, self._pending = self._pending, []
            async with self._write_lock:
                try:
                    if self._writer_db is None:
                        raise sqlite3.OperationalError("the store is closed")
                    results = await loop.run_in_executor(
                        self._writer, self._write_batch, self._writer_db, batch
                    )
                except (sqlite3.Error, StoreError) as error:
                    logger.error("storing %d messages failed: %s", len(batch), error)
                    failure = (
                        error
                        if isinstance(error, StoreError)
                        else StoreError(f"The database write failed: {error}")
                    )
                    results = [failure] * len(batch)
            for pending, result in zip(batch, results, strict=True):
                if pending.future.done():
                    continue
                if isinstance(result, Exception):
                    pending.future.set_exception(result)
                else:
                    pending.future.set_result(result)

    def _write_batch(
        self, db: sqlite3.Connection, batch: list[_PendingMessage]
    ) -> list[tuple[Message, bool] | Exception]:
        """Store a batch in one transaction, in order; runs in the writer thread.

        A closed conversation fails only its own message. Raises ``sqlite3.Error``
        or ``StoreError`` after rolling back when the transaction fails, and then
        nothing was stored.
        """
        results: list[tuple[Message, bool] | Exception] = []
        # The messages of a batch are committed together, so they share a time.
        created_at = utc_now()
        db.execute("BEGIN IMMEDIATE")
        try:
            for pending in batch:
                results.append(self._write_one(db, pending, created_at))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return results

    def _write_one(
        self, db: sqlite3.Connection, pending: _PendingMessage, created_at: str
    ) -> tuple[Message, bool] | Exception:
        """Store one message of a batch: two statements unless it is a retry.

        The sequence number is taken first, which also proves the conversation
        open. The insert then skips a message already stored with the same
        sender and ``client_id`` (a retry). Only in that case is the number
        given back and the stored copy read, so the usual message costs an
        UPDATE and an INSERT, with no lookup before them.
        """
        seq_row = db.execute(
            "UPDATE conversations SET last_seq = last_seq + 1"
            " WHERE id = ? AND status IN ('queued', 'active') RETURNING last_seq",
            (pending.conversation_id,),
        ).fetchone()
        if seq_row is None:
            # The conversation is closed or unknown. A retry of a message
            # stored before the end still gets its acknowledgement.
            stored = self._stored_copy(db, pending)
            if stored is not None:
                return stored, False
            return ConversationClosedError(pending.conversation_id)
        message = Message(
            conversation_id=pending.conversation_id,
            seq=int(seq_row[0]),
            sender=pending.sender,
            client_id=pending.client_id,
            body=pending.body,
            created_at=created_at,
            volunteer_id=pending.volunteer_id,
        )
        inserted = db.execute(
            "INSERT INTO messages"
            " (conversation_id, seq, sender, volunteer_id, client_id, body,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (conversation_id, sender, client_id) DO NOTHING",
            (
                message.conversation_id,
                message.seq,
                message.sender,
                pending.volunteer_id,
                message.client_id,
                self._seal(message.body, message.conversation_id, message.seq),
                message.created_at,
            ),
        ).rowcount
        if inserted == 1:
            return message, True
        # A retry, so the number goes back and seq stays without gaps.
        db.execute(
            "UPDATE conversations SET last_seq = last_seq - 1 WHERE id = ?",
            (pending.conversation_id,),
        )
        stored = self._stored_copy(db, pending)
        if stored is None:
            raise StoreError(
                f"A message of {pending.conversation_id} was neither stored nor found."
            )
        return stored, False

    def _stored_copy(
        self, db: sqlite3.Connection, pending: _PendingMessage
    ) -> Message | None:
        """Return the message already stored with the same sender and client id."""
        row = db.execute(
            "SELECT * FROM messages"
            " WHERE conversation_id = ? AND sender = ? AND client_id = ?",
            (pending.conversation_id, pending.sender, pending.client_id),
        ).fetchone()
        return None if row is None else self._message(row)

    async def messages_after(self, conversation_id: str, seq: int) -> list[Message]:
        """Return the messages with a sequence number above ``seq``, in order."""
        rows = await self._fetchall(
            "SELECT * FROM messages WHERE conversation_id = ? AND seq > ? ORDER BY seq",
            (conversation_id, seq),
        )
        return [self._message(row) for row in rows]

    def _seal(self, body: str, conversation_id: str, seq: int) -> str:
        if self._cipher is None:
            raise StoreError("The store was opened without a data key.")
        return self._cipher.encrypt(body, _message_context(conversation_id, seq))

    def _message(self, row: sqlite3.Row) -> Message:
        body: str = row["body"]
        # Bodies written before encryption at rest stay readable until
        # `vso rotate-key` seals them.
        if body.startswith(SEALED_PREFIX + ":"):
            if self._cipher is None:
                raise StoreError("The store was opened without a data key.")
            try:
                body = self._cipher.decrypt(
                    body, _message_context(row["conversation_id"], row["seq"])
                )
            except DecryptionError as error:
                raise StoreError(
                    f"Message {row['seq']} of {row['conversation_id']} cannot be"
                    f" decrypted: {error}"
                ) from error
        return Message(
            conversation_id=row["conversation_id"],
            seq=row["seq"],
            sender=row["sender"],
            client_id=row["client_id"],
            body=body,
            created_at=row["created_at"],
            volunteer_id=row["volunteer_id"],
        )

    async def reseal_messages(self, batch: int = 500) -> int:
        """Seal every body not sealed with the current key; return how many.

        Works in transactions of ``batch`` rows, so a relay can keep running.
        Raises ``StoreError`` when a body cannot be decrypted with any key.
        """
        if self._cipher is None:
            raise StoreError("The store was opened without a data key.")
        prefix = f"{SEALED_PREFIX}:{self._cipher.current_key_id}:"
        total = 0
        while True:
            async with self._transaction() as tx:
                rows = await tx.fetchall(
                    "SELECT * FROM messages WHERE substr(body, 1, ?) != ? LIMIT ?",
                    (len(prefix), prefix, batch),
                )
                for row in rows:
                    message = self._message(row)
                    await tx.execute(
                        "UPDATE messages SET body = ?"
                        " WHERE conversation_id = ? AND seq = ?",
                        (
                            self._seal(
                                message.body, message.conversation_id, message.seq
                            ),
                            message.conversation_id,
                            message.seq,
                        ),
                    )
            total += len(rows)
            if len(rows) < batch:
                return total

    async def reseal_totp_secrets(self) -> int:
        """Seal every TOTP secret not sealed with the current key; return how many.

        Raises ``StoreError`` when a secret cannot be decrypted with any key.
        """
        if self._cipher is None:
            raise StoreError("The store was opened without a data key.")
        prefix = f"{SEALED_PREFIX}:{self._cipher.current_key_id}:"
        rows = await self._fetchall(
            "SELECT id FROM volunteers WHERE totp_secret IS NOT NULL"
            " AND substr(totp_secret, 1, ?) != ?",
            (len(prefix), prefix),
        )
        for row in rows:
            volunteer_id = int(row[0])
            secret = await self.get_totp_secret(volunteer_id)
            if secret is None:
                continue
            sealed = self._cipher.encrypt(secret, f"totp:{volunteer_id}")
            async with self._transaction() as tx:
                await tx.execute(
                    "UPDATE volunteers SET totp_secret = ? WHERE id = ?",
                    (sealed, volunteer_id),
                )
        return len(rows)

    # Deletion and retention

    async def delete_conversation(self, conversation_id: str) -> bool:
        """Delete a closed conversation and its messages, keeping it in the counts.

        Returns False, deleting nothing, when it is unknown or still open.
        """
        where = "WHERE id = ? AND status IN ('ended', 'abandoned')"
        async with self._transaction() as tx:
            await tx.execute(
                _COUNT_BEFORE_DELETE.format(where=where), (conversation_id,)
            )
            cursor = await tx.execute(
                f"DELETE FROM conversations {where}", (conversation_id,)
            )
            return cursor.rowcount == 1

    async def purge_closed_before(self, cutoff: str) -> int:
        """Delete conversations that closed before ``cutoff`` (ISO 8601 UTC).

        Their messages go with them; the daily counts keep their number. Returns
        how many conversations were deleted.
        """
        where = "WHERE status IN ('ended', 'abandoned') AND ended_at < ?"
        async with self._transaction() as tx:
            await tx.execute(_COUNT_BEFORE_DELETE.format(where=where), (cutoff,))
            cursor = await tx.execute(f"DELETE FROM conversations {where}", (cutoff,))
            return int(cursor.rowcount)

    async def conversation_counts(self) -> list[tuple[str, int, str, str, str, int]]:
        """Return the counts of deleted conversations, as (day, site id, channel,
        status, end reason, count) rows in day order."""
        rows = await self._fetchall(
            "SELECT day, site_id, channel, status, end_reason, count"
            " FROM conversation_counts ORDER BY day, site_id, channel, status,"
            " end_reason"
        )
        return [
            (row[0], int(row[1]), row[2], row[3], row[4], int(row[5])) for row in rows
        ]


@dataclass
class _PendingMessage:
    """One ``add_message`` call waiting for the next group commit."""

    conversation_id: str
    sender: str
    client_id: str
    body: str
    volunteer_id: int | None
    future: asyncio.Future[tuple[Message, bool]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


def _connect_writer(path: Path) -> sqlite3.Connection:
    """Open a connection for a thread of the store, with the store's pragmas."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("PRAGMA foreign_keys = ON")
    db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    db.execute("PRAGMA wal_autocheckpoint = 0")
    return db


class _Tx:
    """The statements of one open transaction; only ``Store`` creates it."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def execute(self, sql: str, params: tuple[Any, ...] = ()) -> aiosqlite.Cursor:
        return await self._db.execute(sql, params)

    async def fetchone(
        self, sql: str, params: tuple[Any, ...] = ()
    ) -> sqlite3.Row | None:
        async with self._db.execute(sql, params) as cursor:
            row: sqlite3.Row | None = await cursor.fetchone()
            return row

    async def fetchall(
        self, sql: str, params: tuple[Any, ...] = ()
    ) -> list[sqlite3.Row]:
        async with self._db.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def executescript_in_transaction(self, script: str) -> None:
        """Run each statement of a script; ``executescript`` would commit first."""
        for statement in script.split(";"):
            if statement.strip():
                await self._db.execute(statement)
