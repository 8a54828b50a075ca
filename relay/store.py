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
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from relay.crypto import PREFIX as SEALED_PREFIX
from relay.crypto import DataCipher, DecryptionError
from relay.hours import Interval, Schedule

logger = logging.getLogger("relay.store")

T = TypeVar("T")

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
    # Message and e-mail conversations: their inbox state, who claimed them,
    # the visitor's reply code (a keyed hash) and notification address (sealed).
    """
    CREATE TABLE inbox (
        conversation_id TEXT PRIMARY KEY
            REFERENCES conversations(id) ON DELETE CASCADE,
        state TEXT NOT NULL
            CHECK (state IN ('waiting', 'claimed', 'answered', 'closed')),
        claimed_by INTEGER REFERENCES volunteers(id),
        claimed_at TEXT,
        updated_at TEXT NOT NULL,
        reply_code_hash TEXT UNIQUE,
        notify_address TEXT,
        blocked_at TEXT,
        blocked_by INTEGER REFERENCES volunteers(id)
    );
    CREATE INDEX inbox_by_state ON inbox (state, updated_at);
    """,
    # Opening hours: a site with a row in site_hours keeps the hours listed in
    # opening_hours (local minutes since midnight, Monday = 0) in its zone.
    """
    CREATE TABLE site_hours (
        site_id INTEGER PRIMARY KEY REFERENCES sites(id) ON DELETE CASCADE,
        time_zone TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE opening_hours (
        site_id INTEGER NOT NULL REFERENCES site_hours(site_id) ON DELETE CASCADE,
        weekday INTEGER NOT NULL CHECK (weekday BETWEEN 0 AND 6),
        opens INTEGER NOT NULL CHECK (opens BETWEEN 0 AND 1439),
        closes INTEGER NOT NULL CHECK (closes BETWEEN 1 AND 1440),
        CHECK (opens < closes),
        PRIMARY KEY (site_id, weekday, opens)
    );
    CREATE TABLE closed_dates (
        site_id INTEGER NOT NULL REFERENCES site_hours(site_id) ON DELETE CASCADE,
        day TEXT NOT NULL,
        PRIMARY KEY (site_id, day)
    );
    """,
    # E-mail: each conversation's thread (reply token hash, keyed sender hash,
    # sealed sender and subject), the IMAP messages already imported, and
    # the outbox of mail to send.
    """
    CREATE TABLE mail_threads (
        conversation_id TEXT PRIMARY KEY
            REFERENCES conversations(id) ON DELETE CASCADE,
        token_hash TEXT NOT NULL UNIQUE,
        sender_hash TEXT NOT NULL,
        sender TEXT NOT NULL,
        sender_name TEXT NOT NULL,
        subject TEXT NOT NULL,
        message_ids TEXT NOT NULL
    );
    CREATE TABLE mail_imports (
        mailbox TEXT NOT NULL,
        uidvalidity INTEGER NOT NULL,
        uid INTEGER NOT NULL,
        message_id_hash TEXT,
        conversation_id TEXT,
        outcome TEXT NOT NULL,
        imported_at TEXT NOT NULL,
        PRIMARY KEY (mailbox, uidvalidity, uid)
    );
    CREATE UNIQUE INDEX mail_imports_message_id ON mail_imports (message_id_hash)
        WHERE message_id_hash IS NOT NULL;
    CREATE TABLE mail_outbox (
        id INTEGER PRIMARY KEY,
        conversation_id TEXT REFERENCES conversations(id) ON DELETE CASCADE,
        seq INTEGER,
        kind TEXT NOT NULL,
        message_id TEXT NOT NULL UNIQUE,
        recipient TEXT NOT NULL,
        content TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        last_error TEXT,
        sent_at TEXT,
        created_at TEXT NOT NULL,
        UNIQUE (conversation_id, seq, kind)
    );
    CREATE INDEX mail_outbox_due ON mail_outbox (next_attempt_at)
        WHERE sent_at IS NULL;
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


class ConversationBlockedError(Exception):
    """A volunteer blocked the conversation's reply code, so it takes no more
    messages from the visitor."""


class ClaimedByOtherError(Exception):
    """Another volunteer claimed the conversation; ``claimed_by`` is their id."""

    def __init__(self, conversation_id: str, claimed_by: int) -> None:
        super().__init__(f"{conversation_id} is claimed by volunteer {claimed_by}")
        self.conversation_id = conversation_id
        self.claimed_by = claimed_by


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
    # 'chat', 'message' (left on the chat page) or 'email'.
    channel: str = "chat"

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


INBOX_CHANNELS = ("message", "email")
INBOX_STATES = ("waiting", "claimed", "answered", "closed")


@dataclass(frozen=True)
class InboxEntry:
    """A message or e-mail conversation as the volunteer inbox lists it."""

    conversation_id: str
    site_id: int
    channel: str
    state: str
    claimed_by: int | None
    # The claiming volunteer's display name, for "claimed by" labels.
    claimed_by_name: str | None
    claimed_at: str | None
    created_at: str
    updated_at: str
    last_seq: int
    has_notify_address: bool
    blocked: bool


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
        channel=row["channel"],
    )


# Every inbox column that ``_inbox_entry`` reads, joined to its conversation.
_INBOX_SELECT = (
    "SELECT inbox.*, conversations.site_id, conversations.channel,"
    " conversations.created_at, conversations.last_seq,"
    " volunteers.display_name AS claimed_by_name FROM inbox"
    " JOIN conversations ON conversations.id = inbox.conversation_id"
    " LEFT JOIN volunteers ON volunteers.id = inbox.claimed_by"
)


def _inbox_entry(row: sqlite3.Row) -> InboxEntry:
    return InboxEntry(
        conversation_id=row["conversation_id"],
        site_id=row["site_id"],
        channel=row["channel"],
        state=row["state"],
        claimed_by=row["claimed_by"],
        claimed_by_name=row["claimed_by_name"],
        claimed_at=row["claimed_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        last_seq=row["last_seq"],
        has_notify_address=row["notify_address"] is not None,
        blocked=row["blocked_at"] is not None,
    )


def _notify_context(conversation_id: str) -> str:
    """Return the associated data that binds a sealed address to its row."""
    return f"notify:{conversation_id}"


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

    async def get_site_schedule(self, site_id: int) -> Schedule | None:
        """Return a site's opening hours, or None when it is open at all hours."""
        row = await self._fetchone(
            "SELECT time_zone FROM site_hours WHERE site_id = ?", (site_id,)
        )
        if row is None:
            return None
        intervals = await self._fetchall(
            "SELECT weekday, opens, closes FROM opening_hours WHERE site_id = ?"
            " ORDER BY weekday, opens",
            (site_id,),
        )
        days = await self._fetchall(
            "SELECT day FROM closed_dates WHERE site_id = ? ORDER BY day", (site_id,)
        )
        return Schedule(
            time_zone=row["time_zone"],
            intervals=tuple(Interval(*interval) for interval in intervals),
            closed_dates=tuple(date.fromisoformat(day[0]) for day in days),
        )

    async def set_site_schedule(self, site_id: int, schedule: Schedule | None) -> None:
        """Replace a site's opening hours; None makes it open at all hours."""
        async with self._transaction() as tx:
            await tx.execute("DELETE FROM site_hours WHERE site_id = ?", (site_id,))
            if schedule is None:
                return
            await tx.execute(
                "INSERT INTO site_hours (site_id, time_zone, updated_at)"
                " VALUES (?, ?, ?)",
                (site_id, schedule.time_zone, utc_now()),
            )
            for interval in schedule.intervals:
                await tx.execute(
                    "INSERT INTO opening_hours (site_id, weekday, opens, closes)"
                    " VALUES (?, ?, ?, ?)",
                    (site_id, interval.weekday, interval.opens, interval.closes),
                )
            for day in schedule.closed_dates:
                await tx.execute(
                    "INSERT INTO closed_dates (site_id, day) VALUES (?, ?)",
                    (site_id, day.isoformat()),
                )

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
        """Return queued and active chats, queued ones in queue order."""
        rows = await self._fetchall(
            "SELECT * FROM conversations WHERE status IN ('queued', 'active')"
            " AND channel = 'chat' ORDER BY queue_key"
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
        db.execute("BEGIN IMMEDIATE")
        try:
            for pending in batch:
                results.append(self._write_one(db, pending))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return results

    def _write_one(
        self, db: sqlite3.Connection, pending: _PendingMessage
    ) -> tuple[Message, bool] | Exception:
        row = db.execute(
            "SELECT * FROM messages"
            " WHERE conversation_id = ? AND sender = ? AND client_id = ?",
            (pending.conversation_id, pending.sender, pending.client_id),
        ).fetchone()
        if row is not None:
            return self._message(row), False
        seq_row = db.execute(
            "UPDATE conversations SET last_seq = last_seq + 1"
            " WHERE id = ? AND status IN ('queued', 'active') RETURNING last_seq",
            (pending.conversation_id,),
        ).fetchone()
        if seq_row is None:
            return ConversationClosedError(pending.conversation_id)
        message = Message(
            conversation_id=pending.conversation_id,
            seq=int(seq_row[0]),
            sender=pending.sender,
            client_id=pending.client_id,
            body=pending.body,
            created_at=utc_now(),
            volunteer_id=pending.volunteer_id,
        )
        db.execute(
            "INSERT INTO messages"
            " (conversation_id, seq, sender, volunteer_id, client_id, body,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                message.conversation_id,
                message.seq,
                message.sender,
                pending.volunteer_id,
                message.client_id,
                self._seal(message.body, message.conversation_id, message.seq),
                message.created_at,
            ),
        )
        return message, True

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

    # Message and e-mail conversations (the inbox)
    #
    # These conversations live in ``conversations`` like chats, with
    # ``channel`` 'message' or 'email', status 'active' while open and 'ended'
    # once closed, so that messages, retention and the daily counts treat them
    # like chats. Their inbox state lives in ``inbox``: 'waiting' for a
    # volunteer, 'claimed' by one, 'answered' by one, or 'closed'. Read their
    # messages with ``messages_after(conversation_id, 0)``.

    async def create_inbox_conversation(
        self,
        conversation_id: str,
        site_id: int,
        channel: str,
        body: str,
        *,
        client_id: str,
        reply_code_hash: str | None = None,
        notify_address: str | None = None,
    ) -> tuple[InboxEntry, Message]:
        """Insert a waiting message or e-mail conversation with its first message.

        ``channel`` is 'message' or 'email'; ``body`` is the visitor's first
        message, sealed at rest like chat messages, and ``client_id`` is its
        de-duplication id. ``reply_code_hash`` is the keyed hash that finds the
        conversation again from ``/replies``; ``notify_address`` is the address
        to tell that a reply waits, sealed at rest. Raises ``ValueError`` for an
        unknown channel or a reply code hash already in use, ``StoreError`` when
        the write fails.
        """
        if channel not in INBOX_CHANNELS:
            raise ValueError(f"channel must be 'message' or 'email', not {channel!r}")
        sealed_address = (
            self._seal_text(notify_address, _notify_context(conversation_id))
            if notify_address is not None
            else None
        )
        pending = _PendingMessage(conversation_id, "visitor", client_id, body, None)

        def work(db: sqlite3.Connection) -> Message:
            now = utc_now()
            # Inbox conversations never enter the chat queue. Their token hash
            # only fills the NOT NULL UNIQUE column, with a value that cannot
            # equal the SHA-256 hex digest of any chat token.
            db.execute(
                "INSERT INTO conversations (id, site_id, channel, status,"
                " token_hash, queue_key, created_at)"
                " VALUES (?, ?, ?, 'active', ?, 0, ?)",
                (conversation_id, site_id, channel, f"inbox:{conversation_id}", now),
            )
            db.execute(
                "INSERT INTO inbox (conversation_id, state, updated_at,"
                " reply_code_hash, notify_address) VALUES (?, 'waiting', ?, ?, ?)",
                (conversation_id, now, reply_code_hash, sealed_address),
            )
            result = self._write_one(db, pending)
            if isinstance(result, Exception):
                raise result
            return result[0]

        try:
            message = await self._write_in_writer(work)
        except StoreError as error:
            if isinstance(error.__cause__, sqlite3.IntegrityError):
                raise ValueError(
                    "The conversation id or the reply code hash is already in use."
                ) from None
            raise
        entry = await self.get_inbox_entry(conversation_id)
        if entry is None:
            raise StoreError("The new conversation was not found after inserting it.")
        return entry, message

    async def add_inbox_visitor_message(
        self, conversation_id: str, client_id: str, body: str
    ) -> tuple[Message, bool]:
        """Store the visitor's (or e-mail sender's) next message.

        The conversation goes back to 'claimed' when a volunteer claimed it, else
        to 'waiting'; a closed one opens again. Returns the message and True,
        or the message stored earlier with the same ``client_id`` and False.
        Raises ``ConversationClosedError`` for an unknown conversation,
        ``ConversationBlockedError`` when its reply code is blocked.
        """
        pending = _PendingMessage(conversation_id, "visitor", client_id, body, None)

        def work(db: sqlite3.Connection) -> tuple[Message, bool]:
            row = db.execute(
                "SELECT blocked_at FROM inbox WHERE conversation_id = ?",
                (conversation_id,),
            ).fetchone()
            if row is None:
                raise ConversationClosedError(conversation_id)
            if row["blocked_at"] is not None:
                raise ConversationBlockedError(conversation_id)
            stored = db.execute(
                "SELECT * FROM messages"
                " WHERE conversation_id = ? AND sender = 'visitor' AND client_id = ?",
                (conversation_id, client_id),
            ).fetchone()
            if stored is not None:
                return self._message(stored), False
            db.execute(
                "UPDATE conversations SET status = 'active', ended_at = NULL,"
                " end_reason = NULL WHERE id = ?",
                (conversation_id,),
            )
            result = self._write_one(db, pending)
            if isinstance(result, Exception):
                raise result
            db.execute(
                "UPDATE inbox SET updated_at = ?, state = CASE"
                " WHEN claimed_by IS NULL THEN 'waiting' ELSE 'claimed' END"
                " WHERE conversation_id = ?",
                (result[0].created_at, conversation_id),
            )
            return result

        return await self._write_in_writer(work)

    async def record_inbox_reply(
        self,
        conversation_id: str,
        volunteer_id: int,
        client_id: str,
        body: str,
        *,
        take_over: bool = False,
    ) -> tuple[Message, bool]:
        """Store a volunteer's reply and mark the conversation 'answered'.

        An unclaimed conversation becomes the volunteer's. One claimed by
        another volunteer raises ``ClaimedByOtherError`` and stores nothing,
        unless ``take_over`` is True, which moves the claim to this volunteer.
        Returns the message and True, or the reply stored earlier with the same
        ``client_id`` and False. Raises ``ConversationClosedError`` when the
        conversation is closed or unknown.
        """
        pending = _PendingMessage(
            conversation_id, "volunteer", client_id, body, volunteer_id
        )

        def work(db: sqlite3.Connection) -> tuple[Message, bool]:
            row = db.execute(
                "SELECT state, claimed_by FROM inbox WHERE conversation_id = ?",
                (conversation_id,),
            ).fetchone()
            if row is None or row["state"] == "closed":
                raise ConversationClosedError(conversation_id)
            claimed_by = row["claimed_by"]
            if claimed_by not in (None, volunteer_id) and not take_over:
                raise ClaimedByOtherError(conversation_id, int(claimed_by))
            result = self._write_one(db, pending)
            if isinstance(result, Exception):
                raise result
            now = utc_now()
            db.execute(
                "UPDATE inbox SET state = 'answered', updated_at = ?,"
                " claimed_at = CASE WHEN claimed_by IS ? THEN claimed_at ELSE ? END,"
                " claimed_by = ? WHERE conversation_id = ?",
                (now, volunteer_id, now, volunteer_id, conversation_id),
            )
            return result

        return await self._write_in_writer(work)

    async def claim_inbox_conversation(
        self, conversation_id: str, volunteer_id: int, *, take_over: bool = False
    ) -> bool:
        """Claim an open conversation for a volunteer.

        Returns True when the claim is the volunteer's afterwards. Without
        ``take_over`` only an unclaimed conversation (or one the volunteer
        already claimed) can be claimed, and the condition in the UPDATE makes
        exactly one of two simultaneous claims win, even from two processes.
        With ``take_over`` the claim moves from whoever held it. A closed or
        unknown conversation returns False.
        """
        condition = "" if take_over else " AND (claimed_by IS NULL OR claimed_by = ?)"
        params: tuple[Any, ...] = (volunteer_id, utc_now(), conversation_id)
        if not take_over:
            params += (volunteer_id,)
        async with self._transaction() as tx:
            cursor = await tx.execute(
                "UPDATE inbox SET claimed_by = ?, claimed_at = ?,"
                " state = CASE WHEN state = 'waiting' THEN 'claimed' ELSE state END"
                " WHERE conversation_id = ? AND state != 'closed'" + condition,
                params,
            )
            return cursor.rowcount == 1

    async def release_inbox_conversation(
        self, conversation_id: str, volunteer_id: int
    ) -> bool:
        """Give up a volunteer's claim; a claimed conversation waits again.

        Returns False when the volunteer did not hold the claim.
        """
        async with self._transaction() as tx:
            cursor = await tx.execute(
                "UPDATE inbox SET claimed_by = NULL, claimed_at = NULL,"
                " state = CASE WHEN state = 'claimed' THEN 'waiting' ELSE state END"
                " WHERE conversation_id = ? AND claimed_by = ?",
                (conversation_id, volunteer_id),
            )
            return cursor.rowcount == 1

    async def close_inbox_conversation(self, conversation_id: str) -> bool:
        """Close an open message or e-mail conversation.

        It keeps its claim, so the inbox still shows who handled it, and counts
        as ended for retention. Returns False when it was closed or unknown.
        """
        now = utc_now()
        async with self._transaction() as tx:
            cursor = await tx.execute(
                "UPDATE inbox SET state = 'closed', updated_at = ?"
                " WHERE conversation_id = ? AND state != 'closed'",
                (now, conversation_id),
            )
            if cursor.rowcount != 1:
                return False
            await tx.execute(
                "UPDATE conversations SET status = 'ended', ended_at = ?,"
                " end_reason = 'closed' WHERE id = ?",
                (now, conversation_id),
            )
            return True

    async def block_inbox_reply_code(
        self, conversation_id: str, volunteer_id: int
    ) -> bool:
        """Block a conversation's reply code; the visitor can no longer write.

        The conversation is closed as well. Returns False when it is unknown
        or already blocked.
        """
        now = utc_now()
        async with self._transaction() as tx:
            cursor = await tx.execute(
                "UPDATE inbox SET blocked_at = ?, blocked_by = ?, state = 'closed',"
                " updated_at = ? WHERE conversation_id = ? AND blocked_at IS NULL",
                (now, volunteer_id, now, conversation_id),
            )
            if cursor.rowcount != 1:
                return False
            await tx.execute(
                "UPDATE conversations SET status = 'ended', end_reason = 'blocked',"
                " ended_at = COALESCE(ended_at, ?) WHERE id = ?",
                (now, conversation_id),
            )
            return True

    async def delete_inbox_conversation(self, conversation_id: str) -> bool:
        """Delete a message or e-mail conversation and its messages at once,
        open or not, keeping it in the daily counts.

        Returns False, deleting nothing, when it is unknown or a chat.
        """
        where = "WHERE id = ? AND channel IN ('message', 'email')"
        return await self._delete_counted(where, (conversation_id,)) == 1

    async def get_inbox_entry(self, conversation_id: str) -> InboxEntry | None:
        row = await self._fetchone(
            _INBOX_SELECT + " WHERE inbox.conversation_id = ?", (conversation_id,)
        )
        return _inbox_entry(row) if row else None

    async def get_inbox_entry_by_reply_code_hash(
        self, reply_code_hash: str
    ) -> InboxEntry | None:
        row = await self._fetchone(
            _INBOX_SELECT + " WHERE inbox.reply_code_hash = ?", (reply_code_hash,)
        )
        return _inbox_entry(row) if row else None

    async def list_inbox(
        self,
        states: Sequence[str] = ("waiting", "claimed", "answered"),
        *,
        site_ids: Sequence[int] | None = None,
        limit: int = 500,
    ) -> list[InboxEntry]:
        """Return message and e-mail conversations in ``states``, oldest change
        first, optionally only those of ``site_ids``; at most ``limit``."""
        unknown = set(states) - set(INBOX_STATES)
        if unknown:
            raise ValueError(f"Unknown inbox states: {sorted(unknown)}")
        if not states:
            return []
        conditions = [f"inbox.state IN ({', '.join('?' * len(states))})"]
        params: list[Any] = list(states)
        if site_ids is not None:
            if not site_ids:
                return []
            conditions.append(
                f"conversations.site_id IN ({', '.join('?' * len(site_ids))})"
            )
            params.extend(site_ids)
        rows = await self._fetchall(
            _INBOX_SELECT
            + " WHERE "
            + " AND ".join(conditions)
            + " ORDER BY inbox.updated_at, inbox.conversation_id LIMIT ?",
            (*params, limit),
        )
        return [_inbox_entry(row) for row in rows]

    async def count_inbox(self) -> dict[str, int]:
        """Return how many message and e-mail conversations are in each state."""
        rows = await self._fetchall("SELECT state, COUNT(*) FROM inbox GROUP BY state")
        counts = dict.fromkeys(INBOX_STATES, 0)
        counts.update({row[0]: int(row[1]) for row in rows})
        return counts

    async def get_notify_address(self, conversation_id: str) -> str | None:
        """Return the address to tell that a reply waits, or None when none."""
        row = await self._fetchone(
            "SELECT notify_address FROM inbox WHERE conversation_id = ?",
            (conversation_id,),
        )
        if row is None or row[0] is None:
            return None
        if self._cipher is None:
            raise StoreError("The store was opened without a data key.")
        try:
            return self._cipher.decrypt(row[0], _notify_context(conversation_id))
        except DecryptionError as error:
            raise StoreError(
                f"The notification address of {conversation_id} cannot be"
                f" decrypted: {error}"
            ) from error

    def _seal_text(self, text: str, context: str) -> str:
        if self._cipher is None:
            raise StoreError("The store was opened without a data key.")
        return self._cipher.encrypt(text, context)

    async def _write_in_writer(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in one transaction on the writer thread's connection.

        ``work`` may call ``_write_one``, so a message and the changes that go
        with it commit together. Exceptions other than ``sqlite3.Error`` pass
        through unchanged after the rollback.
        """
        loop = asyncio.get_running_loop()
        async with self._write_lock:
            if self._writer_db is None:
                raise StoreError("The store is closed.")
            try:
                return await loop.run_in_executor(
                    self._writer, _run_transaction, self._writer_db, work
                )
            except sqlite3.Error as error:
                raise StoreError(f"The database write failed: {error}") from error

    # Deletion and retention

    async def delete_conversation(self, conversation_id: str) -> bool:
        """Delete a closed conversation and its messages, keeping it in the counts.

        Returns False, deleting nothing, when it is unknown or still open.
        """
        where = "WHERE id = ? AND status IN ('ended', 'abandoned')"
        return await self._delete_counted(where, (conversation_id,)) == 1

    async def purge_closed_before(self, cutoff: str) -> int:
        """Delete conversations that closed before ``cutoff`` (ISO 8601 UTC).

        Their messages go with them; the daily counts keep their number. Returns
        how many conversations were deleted.
        """
        where = "WHERE status IN ('ended', 'abandoned') AND ended_at < ?"
        return await self._delete_counted(where, (cutoff,))

    async def _delete_counted(self, where: str, params: tuple[Any, ...]) -> int:
        """Delete the conversations ``where`` selects, first adding them to the
        daily counts; return how many were deleted."""
        async with self._transaction() as tx:
            await tx.execute(_COUNT_BEFORE_DELETE.format(where=where), params)
            cursor = await tx.execute(f"DELETE FROM conversations {where}", params)
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


def _run_transaction(
    db: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]
) -> T:
    """Run ``work`` between BEGIN IMMEDIATE and COMMIT, rolling back on any error."""
    db.execute("BEGIN IMMEDIATE")
    try:
        result = work(db)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return result


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
