"""SQLite storage through aiosqlite: schema, migrations and every query.

Nothing outside this module and ``relay/casestore.py`` (case notes and
statistics, on this store's connection) writes SQL, so that another store
(PostgreSQL) can stand beside it. Writes run one at a time under a lock, each in its own
``BEGIN IMMEDIATE`` transaction; the database runs in WAL mode.

Messages are the exception: ``add_message`` calls that arrive while a write is
under way are stored together in the next transaction (group commit), by one
writer thread with its own connection, and each call returns only after that
transaction committed. With ``synchronous = NORMAL`` a committed transaction
survives the relay's crash; a power cut can lose the last ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import aiosqlite

from relay.crypto import PREFIX as SEALED_PREFIX
from relay.crypto import DataCipher, DecryptionError
from relay.hours import Interval, Schedule

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

logger = logging.getLogger("relay.store")

T = TypeVar("T")
D = TypeVar("D", bound="DataclassInstance")

BUSY_TIMEOUT_MS = 5000
# Checkpoints copy the WAL into the database file and sync it to disk, which
# can take tens of milliseconds; they run in a thread of their own at this
# interval, so that no commit, and no ack, waits for one.
CHECKPOINT_SECONDS = 1.0
# A session's last use is written at most this often (less when the idle
# time allowed is short).
SESSION_SEEN_STEP_SECONDS = 60.0
# SQLite starts the WAL over only when a transaction begins while every frame
# is already checkpointed, which the checkpoint thread alone never achieves
# under unbroken load. So when a pass of that thread finds a log larger than
# this, the group-commit writer, the only writer between its batches, runs a
# checkpoint of what is left before its next batch, and that batch starts the
# log over. ``journal_size_limit`` then cuts the file back to this size.
# Each start-over costs extra checkpoint passes. At 4 MiB (SQLite's own
# automatic checkpoint size) they came several times a second at 1,000
# messages a second and tripled the relay's p99 latency in `make bench`.
WAL_SIZE_LIMIT = 64 * 1024 * 1024
# When the file grows past this many limits between two passes of the
# checkpoint thread, the writer calls for the next pass at once.
WAL_HARD_LIMIT_FACTOR = 8
# Passes of the checkpoint thread in a row before it requests that the writer
# start the log over. Each copies what was written during the one before.
WAL_PASSES_BEFORE_RESTART = 3
# Each frame of the WAL is one page and a 24-byte header.
WAL_FRAME_HEADER = 24

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
    # The audit log of administrative and supervisory actions. Only
    # ``record_audit`` writes it, and nothing updates or deletes its rows.
    """
    CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created_at TEXT NOT NULL,
        actor_id INTEGER NOT NULL,
        actor_name TEXT NOT NULL,
        action TEXT NOT NULL,
        target_kind TEXT NOT NULL,
        target_id TEXT NOT NULL
    );
    CREATE INDEX audit_log_action ON audit_log (action, id);
    """,
    # Invitations to new staff accounts, and each site's greeting and colour.
    """
    CREATE TABLE invitations (
        id INTEGER PRIMARY KEY,
        token_hash TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL CHECK (role IN ('volunteer', 'supervisor', 'admin')),
        created_by INTEGER NOT NULL REFERENCES volunteers(id),
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        used_at TEXT,
        revoked_at TEXT,
        volunteer_id INTEGER REFERENCES volunteers(id)
    );
    ALTER TABLE sites ADD COLUMN greeting TEXT NOT NULL DEFAULT '';
    ALTER TABLE sites ADD COLUMN brand_colour TEXT NOT NULL DEFAULT '';
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
    # Case notes and their labels, the post-chat question, volunteers' available
    # time, and the numbers that statistics need. conversation_statistics keeps one
    # row per conversation without text or tokens. When the conversation is
    # deleted, the row stays and its link becomes NULL. Triggers fill it from
    # every write to conversations. The first answer sets wait_seconds, which a
    # hand-back and a new answer keep, and the end sets total_seconds.
    # started_at keeps the minute only.
    """
    CREATE TABLE conversation_statistics (
        id INTEGER PRIMARY KEY,
        conversation_id TEXT UNIQUE
            REFERENCES conversations(id) ON DELETE SET NULL,
        site_id INTEGER NOT NULL,
        channel TEXT NOT NULL,
        started_at TEXT NOT NULL,
        wait_seconds INTEGER,
        total_seconds INTEGER,
        end_reason TEXT,
        feedback_given INTEGER NOT NULL DEFAULT 0,
        helped INTEGER CHECK (helped IN (0, 1)),
        rating INTEGER CHECK (rating BETWEEN 1 AND 5)
    );
    CREATE INDEX conversation_statistics_started
        ON conversation_statistics (started_at);
    INSERT INTO conversation_statistics
        (conversation_id, site_id, channel, started_at, wait_seconds,
         total_seconds, end_reason)
        SELECT id, site_id, channel, substr(created_at, 1, 16) || 'Z',
            CAST(round((julianday(assigned_at) - julianday(created_at)) * 86400)
                AS INTEGER),
            CAST(round((julianday(ended_at) - julianday(created_at)) * 86400)
                AS INTEGER),
            end_reason
        FROM conversations;
    CREATE TRIGGER conversation_statistics_start AFTER INSERT ON conversations
    BEGIN
        INSERT INTO conversation_statistics
            (conversation_id, site_id, channel, started_at)
        VALUES (NEW.id, NEW.site_id, NEW.channel,
            substr(NEW.created_at, 1, 16) || 'Z');
    END;
    CREATE TRIGGER conversation_statistics_answer
        AFTER UPDATE OF assigned_at ON conversations
        WHEN NEW.assigned_at IS NOT NULL
    BEGIN
        UPDATE conversation_statistics SET wait_seconds = CAST(
            round((julianday(NEW.assigned_at) - julianday(NEW.created_at)) * 86400)
            AS INTEGER)
        WHERE conversation_id = NEW.id AND wait_seconds IS NULL;
    END;
    CREATE TRIGGER conversation_statistics_end
        AFTER UPDATE OF status ON conversations
        WHEN NEW.status IN ('ended', 'abandoned') AND NEW.ended_at IS NOT NULL
    BEGIN
        UPDATE conversation_statistics SET end_reason = NEW.end_reason,
            total_seconds = CAST(
                round((julianday(NEW.ended_at) - julianday(NEW.created_at)) * 86400)
                AS INTEGER)
        WHERE conversation_id = NEW.id AND total_seconds IS NULL;
    END;
    CREATE TABLE case_labels (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('category', 'referral')),
        name TEXT NOT NULL,
        position INTEGER NOT NULL,
        retired_at TEXT,
        UNIQUE (kind, name)
    );
    INSERT INTO case_labels (kind, name, position) VALUES
        ('category', 'Theft or burglary', 1),
        ('category', 'Assault', 2),
        ('category', 'Domestic violence', 3),
        ('category', 'Sexual violence', 4),
        ('category', 'Harassment or stalking', 5),
        ('category', 'Online fraud or cybercrime', 6),
        ('category', 'Hate crime', 7),
        ('category', 'Trafficking', 8),
        ('category', 'Other', 9),
        ('referral', 'Police', 1),
        ('referral', 'Legal aid', 2),
        ('referral', 'Victim Support Agency', 3),
        ('referral', 'Supportline 179', 4),
        ('referral', 'Another listed service', 5);
    CREATE TABLE statistic_labels (
        statistic_id INTEGER NOT NULL
            REFERENCES conversation_statistics(id) ON DELETE CASCADE,
        label_id INTEGER NOT NULL REFERENCES case_labels(id),
        PRIMARY KEY (statistic_id, label_id)
    );
    CREATE TABLE case_notes (
        conversation_id TEXT PRIMARY KEY
            REFERENCES conversations(id) ON DELETE CASCADE,
        note TEXT NOT NULL,
        author_id INTEGER REFERENCES volunteers(id) ON DELETE SET NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE availability_intervals (
        id INTEGER PRIMARY KEY,
        volunteer_id INTEGER REFERENCES volunteers(id) ON DELETE SET NULL,
        started_at TEXT NOT NULL,
        ended_at TEXT
    );
    CREATE INDEX availability_intervals_open ON availability_intervals (volunteer_id)
        WHERE ended_at IS NULL;
    CREATE INDEX availability_intervals_started
        ON availability_intervals (started_at);
    """,
    # Supervision: whispers, support alerts, hard chats with their breaks, and
    # the periods each volunteer was available. A whisper has its own table, not
    # a row in messages, so no visitor-facing query can return one and the
    # visitor's seq numbers stay without gaps.
    """
    CREATE TABLE whispers (
        id INTEGER PRIMARY KEY,
        conversation_id TEXT NOT NULL
            REFERENCES conversations(id) ON DELETE CASCADE,
        supervisor_id INTEGER REFERENCES volunteers(id),
        after_seq INTEGER NOT NULL,
        body TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX whispers_conversation ON whispers (conversation_id, id);
    CREATE TABLE support_alerts (
        id INTEGER PRIMARY KEY,
        volunteer_id INTEGER NOT NULL REFERENCES volunteers(id) ON DELETE CASCADE,
        conversation_id TEXT REFERENCES conversations(id) ON DELETE SET NULL,
        raised_at TEXT NOT NULL,
        acknowledged_at TEXT,
        acknowledged_by INTEGER REFERENCES volunteers(id)
    );
    CREATE TABLE hard_chats (
        id INTEGER PRIMARY KEY,
        volunteer_id INTEGER NOT NULL REFERENCES volunteers(id) ON DELETE CASCADE,
        conversation_id TEXT REFERENCES conversations(id) ON DELETE SET NULL,
        marked_at TEXT NOT NULL,
        break_until TEXT NOT NULL,
        break_ended_at TEXT
    );
    CREATE TABLE availability_periods (
        id INTEGER PRIMARY KEY,
        volunteer_id INTEGER NOT NULL REFERENCES volunteers(id) ON DELETE CASCADE,
        started_at TEXT NOT NULL,
        ended_at TEXT
    );
    CREATE INDEX availability_periods_open ON availability_periods (volunteer_id)
        WHERE ended_at IS NULL;
    """,
    # Resource cards sent in chats (sealed JSON), and admins' saved replies.
    """
    ALTER TABLE messages ADD COLUMN resource TEXT;
    CREATE TABLE saved_replies (
        id INTEGER PRIMARY KEY,
        language TEXT NOT NULL,
        title TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX saved_replies_language ON saved_replies (language, title);
    """,
    # Each site's default language for visitors, and the language a visitor
    # chose for their conversation, as codes of relay.i18n.LANGUAGES.
    """
    ALTER TABLE sites ADD COLUMN language TEXT NOT NULL DEFAULT 'en';
    ALTER TABLE conversations ADD COLUMN language TEXT NOT NULL DEFAULT 'en';
    """,
    # Volunteers' available time has one record, availability_intervals, which
    # statistics and supervision both read. The periods of the switch alone go.
    """
    DROP TABLE availability_periods;
    """,
    # A bounce of a sent e-mail: when the relay recorded it, and the RFC 3463
    # status code and RFC 3464 action it gave. The checks keep any other text,
    # such as the Diagnostic-Code that names the recipient's mailbox, out.
    """
    ALTER TABLE mail_outbox ADD COLUMN bounced_at TEXT;
    ALTER TABLE mail_outbox ADD COLUMN bounce_status TEXT
        CHECK (length(bounce_status) <= 9 AND bounce_status NOT GLOB '*[^0-9.]*');
    ALTER TABLE mail_outbox ADD COLUMN bounce_action TEXT
        CHECK (bounce_action IN ('failed', 'delayed'));
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
    # Shown to visitors above the start button; empty for the standard text.
    greeting: str = ""
    # The site's colour as #rrggbb; empty for the relay's own colour.
    brand_colour: str = ""

    language: str = "en"


@dataclass(frozen=True)
class Invitation:
    id: int
    role: str
    created_by: int
    created_at: str
    expires_at: str
    used_at: str | None
    revoked_at: str | None
    volunteer_id: int | None


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
    language: str = "en"

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
    # The resource card a volunteer sent, whose plain-text form is ``body``.
    resource: dict[str, str] | None = None


@dataclass(frozen=True)
class SavedReply:
    """A reply text admins prepared, which volunteers insert into their answer."""

    id: int
    language: str
    title: str
    body: str
    updated_at: str


@dataclass(frozen=True)
class AuditEntry:
    """One administrative or supervisory action: who, what, when and on what."""

    id: int
    created_at: str
    actor_id: int
    # The actor's display name when they acted; a later rename leaves it.
    actor_name: str
    action: str
    target_kind: str
    target_id: str


# Audit entries hold names and ids only, never free text: these patterns keep
# a message, a password or a token from being passed in by mistake.
_AUDIT_ACTION = re.compile(r"[a-z][a-z0-9_]{0,31}(\.[a-z][a-z0-9_]{0,31}){0,3}")
_AUDIT_KIND = re.compile(r"[a-z][a-z0-9_]{0,31}")
_AUDIT_TARGET = re.compile(r"[A-Za-z0-9_-]{1,64}")
AUDIT_PAGE_MAX = 200
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


@dataclass(frozen=True)
class Whisper:
    """A supervisor's note to the volunteer of a conversation, never to a visitor.

    ``after_seq`` is the conversation's latest message when it was written, so
    a dashboard can place it among the messages.
    """

    id: int
    conversation_id: str
    supervisor_id: int | None
    after_seq: int
    body: str
    created_at: str


@dataclass(frozen=True)
class SupportAlert:
    """A volunteer's "Need support" on a chat, until a supervisor acknowledges it."""

    id: int
    volunteer_id: int
    conversation_id: str | None
    raised_at: str


@dataclass
class Load:
    """One volunteer's available time, chats and hard chats, today and this week."""

    available_seconds_today: float = 0.0
    available_seconds_week: float = 0.0
    chats_today: int = 0
    chats_week: int = 0
    hard_today: int = 0
    hard_week: int = 0


def from_row(cls: type[D], row: sqlite3.Row, **computed: Any) -> D:
    """Build the dataclass ``cls`` from the row's columns named like its fields.

    ``computed`` gives the fields whose value is not the column of that name.
    Raises ``IndexError`` when the row lacks a column for another field.
    """
    values = {
        item.name: row[item.name] for item in fields(cls) if item.name not in computed
    }
    return cls(**values, **computed)


def _volunteer(row: sqlite3.Row) -> Volunteer:
    return from_row(
        Volunteer,
        row,
        active=bool(row["active"]),
        totp_enabled=row["totp_secret"] is not None,
    )


def _site(row: sqlite3.Row) -> Site:
    return from_row(Site, row, origins=tuple(json.loads(row["origins"])))


# Every inbox column that ``_inbox_entry`` reads, joined to its conversation.
_INBOX_SELECT = (
    "SELECT inbox.*, conversations.site_id, conversations.channel,"
    " conversations.created_at, conversations.last_seq,"
    " volunteers.display_name AS claimed_by_name FROM inbox"
    " JOIN conversations ON conversations.id = inbox.conversation_id"
    " LEFT JOIN volunteers ON volunteers.id = inbox.claimed_by"
)


def _inbox_entry(row: sqlite3.Row) -> InboxEntry:
    return from_row(
        InboxEntry,
        row,
        has_notify_address=row["notify_address"] is not None,
        blocked=row["blocked_at"] is not None,
    )


def _notify_context(conversation_id: str) -> str:
    """Return the associated data that binds a sealed address to its row."""
    return f"notify:{conversation_id}"


def _message_context(conversation_id: str, seq: int) -> str:
    """Return the associated data that binds a sealed body to its row."""
    return f"message:{conversation_id}:{seq}"


def _whisper_context(conversation_id: str, whisper_id: int) -> str:
    """Return the associated data that binds a sealed whisper to its row."""
    return f"whisper:{conversation_id}:{whisper_id}"


def _parse_time(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _overlap_seconds(start: str, end: str, since: str) -> float:
    """Return the seconds of the period from ``start`` to ``end`` after ``since``."""
    begin = max(start, since)
    if end <= begin:
        return 0.0
    return (_parse_time(end) - _parse_time(begin)).total_seconds()


def _resource_context(conversation_id: str, seq: int) -> str:
    """Return the associated data that binds a sealed resource card to its row."""
    return f"resource:{conversation_id}:{seq}"


async def _connect(path: Path, wal_size_limit: int) -> aiosqlite.Connection:
    """Open an aiosqlite connection to ``path`` with the store's settings."""
    try:
        db = await aiosqlite.connect(path, isolation_level=None)
    except sqlite3.Error as error:
        raise StoreError(f"Cannot open the database {path}: {error}") from error
    db.row_factory = sqlite3.Row
    try:
        for pragma in _pragmas(wal_size_limit):
            await db.execute_fetchall(pragma)
    except BaseException:
        await db.close()
        raise
    return db


class Store:
    """One SQLite database file, opened with ``await Store.open(path)``.

    Message bodies are sealed with ``cipher`` on write and opened on read; a
    store opened without one handles everything but messages.
    """

    def __init__(
        self,
        db: aiosqlite.Connection,
        path: Path,
        cipher: DataCipher | None,
        wal_size_limit: int,
        checkpoint_seconds: float,
    ) -> None:
        # Reads only. Write transactions have a connection of their own, so no
        # read sees a transaction in progress and no transaction starts from a
        # read's snapshot. SQLite raises "database is locked" at once, without
        # waiting, when that snapshot is older than the group commit's writes.
        self._db = db
        self._tx_db: aiosqlite.Connection | None = None
        self._path = path
        self._cipher = cipher
        self._wal_path = path.with_name(path.name + "-wal")
        self._wal_size_limit = wal_size_limit
        self._wal_hard_limit = wal_size_limit * WAL_HARD_LIMIT_FACTOR
        self._wal_retry_size = self._wal_hard_limit
        # Set by the checkpoint thread, cleared by the writer thread.
        self._wal_restart_due = False
        self._frame_size = 4096 + WAL_FRAME_HEADER
        self._checkpoint_seconds = checkpoint_seconds
        self._checkpoint_due = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._write_lock = asyncio.Lock()
        self._writer_db: sqlite3.Connection | None = None
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="vso-writer")
        self._pending: list[_PendingMessage] = []
        self._flusher: asyncio.Task[None] | None = None
        self._checkpoint_db: sqlite3.Connection | None = None
        self._checkpointer = ThreadPoolExecutor(1, thread_name_prefix="vso-checkpoint")
        self._checkpoints: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        path: Path,
        cipher: DataCipher | None = None,
        *,
        wal_size_limit: int = WAL_SIZE_LIMIT,
        checkpoint_seconds: float = CHECKPOINT_SECONDS,
    ) -> Store:
        """Open (creating if needed) the database and apply pending migrations.

        ``wal_size_limit`` (bytes) bounds the WAL file under unbroken load: see
        ``WAL_SIZE_LIMIT``. A thread checkpoints the WAL every
        ``checkpoint_seconds``.
        """
        if wal_size_limit < 0:
            raise ValueError(
                f"wal_size_limit must be 0 or more bytes, not {wal_size_limit}."
            )
        if not checkpoint_seconds > 0:  # also rejects NaN
            raise ValueError(
                f"checkpoint_seconds must be more than 0, not {checkpoint_seconds}."
            )
        # Only the relay's user may read the conversations; SQLite gives the
        # -wal and -shm files the database file's mode.
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        db = await _connect(path, wal_size_limit)
        store = cls(db, path, cipher, wal_size_limit, checkpoint_seconds)
        try:
            # Fetched, so that the statement ends. Left open, it would keep a
            # read transaction open on the connection.
            await db.execute_fetchall("PRAGMA journal_mode = WAL")
            store._tx_db = await _connect(path, wal_size_limit)
            await store._migrate()
            async with db.execute("PRAGMA page_size") as cursor:
                row = await cursor.fetchone()
            if row is not None:
                store._frame_size = int(row[0]) + WAL_FRAME_HEADER
            loop = asyncio.get_running_loop()
            store._writer_db = await loop.run_in_executor(
                store._writer, _connect_writer, path, wal_size_limit
            )
            store._checkpoint_db = await loop.run_in_executor(
                store._checkpointer, _connect_writer, path, wal_size_limit
            )
        except BaseException:
            if store._tx_db is not None:
                await store._tx_db.close()
            await db.close()
            store._writer.shutdown(wait=False)
            store._checkpointer.shutdown(wait=False)
            raise
        store._checkpoints = asyncio.create_task(
            store._checkpoint_forever(), name="store-checkpoints"
        )
        return store

    async def _checkpoint_forever(self) -> None:
        """Checkpoint the WAL every ``checkpoint_seconds`` until the store closes."""
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._checkpoint_due.wait(), self._checkpoint_seconds
                )
            self._checkpoint_due.clear()
            if self._checkpoint_db is None:
                return
            try:
                await loop.run_in_executor(
                    self._checkpointer, self._checkpoint_pass, self._checkpoint_db
                )
            except sqlite3.Error as error:
                # The WAL keeps every commit; the next attempt catches up.
                logger.error("checkpointing the database failed: %s", error)

    def _checkpoint_pass(self, db: sqlite3.Connection) -> None:
        """Copy the WAL into the database file; runs in the checkpoint thread.

        A log over the limit is left for the writer to start over. Before
        that, further passes copy what was written during the one before, so
        that the writer finds less left to copy.
        """
        for _ in range(WAL_PASSES_BEFORE_RESTART):
            row = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            busy, frames, copied = row
            if busy or frames * self._frame_size <= self._wal_size_limit:
                return
            if copied == frames:
                break
        self._wal_restart_due = True

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
            if self._tx_db is not None:
                await self._tx_db.close()
                self._tx_db = None
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
            db = self._tx_db
            try:
                if db is None:
                    raise sqlite3.OperationalError("the store is closed")
                await db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as error:
                raise StoreError(f"Cannot start a transaction: {error}") from error
            try:
                yield _Tx(db)
                await db.execute("COMMIT")
            except BaseException as error:
                # SQLite has already rolled back after some errors (disk full).
                if db.in_transaction:
                    try:
                        await db.execute("ROLLBACK")
                    except sqlite3.Error:
                        logger.exception("rollback failed")
                if isinstance(error, sqlite3.Error):
                    raise StoreError(f"The database write failed: {error}") from error
                raise

    async def _fetchone(
        self, sql: str, params: tuple[Any, ...] = ()
    ) -> sqlite3.Row | None:
        rows = await self._fetchall(sql, params)
        return rows[0] if rows else None

    async def _fetchall(
        self, sql: str, params: tuple[Any, ...] = ()
    ) -> list[sqlite3.Row]:
        # One call runs the statement to its end. A read started meanwhile would
        # share its snapshot and miss later commits, even the reader's own.
        try:
            return list(await self._db.execute_fetchall(sql, params))
        except sqlite3.Error as error:
            raise StoreError(f"The database read failed: {error}") from error

    # The stores that share this connection (relay/casestore.py and
    # relay/mailstore.py) call these, so that their writes take the same lock.
    transaction = _transaction
    fetchone = _fetchone
    fetchall = _fetchall

    def data_cipher(self) -> DataCipher:
        """Return the data cipher; raises ``StoreError`` without a data key."""
        if self._cipher is None:
            raise StoreError("The store was opened without a data key.")
        return self._cipher

    async def check_writable(self) -> None:
        """Write one row, proving the database accepts writes; raises StoreError."""
        async with self._transaction() as tx:
            await tx.execute(
                "UPDATE health SET checked_at = ? WHERE id = 1", (utc_now(),)
            )

    async def newest_message_body(self) -> str | None:
        """Return the stored (sealed) body of the newest message, None if none."""
        row = await self._fetchone(
            "SELECT body FROM messages ORDER BY rowid DESC LIMIT 1"
        )
        return None if row is None else str(row["body"])

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
        """Store the "Available" switch.

        The time a volunteer is available is recorded apart, by
        ``relay.availability``, because it also needs a connected dashboard.
        """
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
        self, session_id: str, idle_seconds: float | None = None
    ) -> Volunteer | None:
        """Return the active volunteer a session belongs to, or None.

        With ``idle_seconds``, a session last seen longer ago counts as expired
        and is deleted. A live one is marked seen now unless that was done
        recently: a dashboard checks its session on every page and at least
        once a minute on each socket, and most checks then need no write.
        """
        row = await self._fetchone(
            "SELECT volunteers.*, sessions.last_seen_at AS session_seen_at"
            " FROM sessions JOIN volunteers ON volunteers.id = sessions.volunteer_id"
            " WHERE sessions.id = ? AND volunteers.active = 1",
            (session_id,),
        )
        if row is None:
            return None
        if idle_seconds is None:
            return _volunteer(row)
        seen_at = row["session_seen_at"] or ""
        if seen_at < utc_ago(idle_seconds):
            await self.delete_session(session_id)
            return None
        # A tenth of the idle time at most, so a session in use never expires.
        step = min(SESSION_SEEN_STEP_SECONDS, idle_seconds / 10)
        if seen_at < utc_ago(step):
            async with self._transaction() as tx:
                await tx.execute(
                    "UPDATE sessions SET last_seen_at = ? WHERE id = ?",
                    (utc_now(), session_id),
                )
        return _volunteer(row)

    async def delete_session(self, session_id: str) -> None:
        async with self._transaction() as tx:
            await tx.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

    # Account administration

    async def set_volunteer_active(self, volunteer_id: int, active: bool) -> bool:
        """Deactivate or reactivate an account.

        Deactivating deletes the account's sessions and revokes the invitations
        it created that are still unused. Returns False when the account is
        unknown. Raises ``ValueError``, changing nothing, when it would leave no
        active admin.
        """
        async with self._transaction() as tx:
            if not active:
                await self._check_other_admin(tx, volunteer_id)
                await tx.execute(
                    "DELETE FROM sessions WHERE volunteer_id = ?", (volunteer_id,)
                )
                await tx.execute(
                    "UPDATE invitations SET revoked_at = ? WHERE created_by = ?"
                    " AND used_at IS NULL AND revoked_at IS NULL",
                    (utc_now(), volunteer_id),
                )
            cursor = await tx.execute(
                "UPDATE volunteers SET active = ?, available = 0 WHERE id = ?",
                (int(active), volunteer_id),
            )
            return cursor.rowcount == 1

    async def set_volunteer_role(self, volunteer_id: int, role: str) -> bool:
        """Change an account's role; returns False when the account is unknown.

        Raises ``ValueError``, changing nothing, for an unknown role or when it
        would leave no active admin.
        """
        if role not in ("volunteer", "supervisor", "admin"):
            raise ValueError(f"Unknown role {role!r}.")
        async with self._transaction() as tx:
            if role != "admin":
                await self._check_other_admin(tx, volunteer_id)
            cursor = await tx.execute(
                "UPDATE volunteers SET role = ? WHERE id = ?", (role, volunteer_id)
            )
            return cursor.rowcount == 1

    @staticmethod
    async def _check_other_admin(tx: _Tx, volunteer_id: int) -> None:
        """Raise ``ValueError`` unless an active admin other than this one exists."""
        row = await tx.fetchone(
            "SELECT COUNT(*) FROM volunteers"
            " WHERE role = 'admin' AND active = 1 AND id != ?",
            (volunteer_id,),
        )
        target = await tx.fetchone(
            "SELECT role, active FROM volunteers WHERE id = ?", (volunteer_id,)
        )
        is_admin = target is not None and target[0] == "admin" and target[1]
        if is_admin and row is not None and int(row[0]) == 0:
            raise ValueError(
                "This is the last active admin account; make another account an"
                " admin first."
            )

    # Invitations

    async def add_invitation(
        self, token_hash: str, role: str, created_by: int, expires_at: str
    ) -> Invitation:
        async with self._transaction() as tx:
            cursor = await tx.execute(
                "INSERT INTO invitations"
                " (token_hash, role, created_by, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (token_hash, role, created_by, utc_now(), expires_at),
            )
            invitation_id = int(cursor.lastrowid or 0)
        invitation = await self.get_invitation(invitation_id)
        if invitation is None:
            raise StoreError("The new invitation was not found after inserting it.")
        return invitation

    async def get_invitation(self, invitation_id: int) -> Invitation | None:
        row = await self._fetchone(
            "SELECT * FROM invitations WHERE id = ?", (invitation_id,)
        )
        return from_row(Invitation, row) if row else None

    async def get_open_invitation(self, token_hash: str) -> Invitation | None:
        """Return the unused, unrevoked, unexpired invitation with this hash."""
        row = await self._fetchone(
            "SELECT * FROM invitations WHERE token_hash = ? AND used_at IS NULL"
            " AND revoked_at IS NULL AND expires_at > ?",
            (token_hash, utc_now()),
        )
        return from_row(Invitation, row) if row else None

    async def list_pending_invitations(self) -> list[Invitation]:
        """Return the invitations still usable, oldest first."""
        rows = await self._fetchall(
            "SELECT * FROM invitations WHERE used_at IS NULL AND revoked_at IS NULL"
            " AND expires_at > ? ORDER BY id",
            (utc_now(),),
        )
        return [from_row(Invitation, row) for row in rows]

    async def revoke_invitation(self, invitation_id: int) -> bool:
        """Revoke a usable invitation; False when unknown, used or revoked."""
        async with self._transaction() as tx:
            cursor = await tx.execute(
                "UPDATE invitations SET revoked_at = ?"
                " WHERE id = ? AND used_at IS NULL AND revoked_at IS NULL",
                (utc_now(), invitation_id),
            )
            return cursor.rowcount == 1

    async def accept_invitation(
        self,
        token_hash: str,
        username: str,
        display_name: str,
        password_hash: str,
        capacity: int,
    ) -> Volunteer | None:
        """Use an invitation to create its account, in one transaction.

        Returns None when the invitation is unknown, used, revoked or expired;
        of two simultaneous uses, exactly one gets the account. Raises
        ``ValueError``, leaving the invitation usable, when the username is taken.
        """
        try:
            async with self._transaction() as tx:
                row = await tx.fetchone(
                    "UPDATE invitations SET used_at = ? WHERE token_hash = ?"
                    " AND used_at IS NULL AND revoked_at IS NULL AND expires_at > ?"
                    " RETURNING id, role",
                    (utc_now(), token_hash, utc_now()),
                )
                if row is None:
                    return None
                cursor = await tx.execute(
                    "INSERT INTO volunteers (username, display_name, password_hash,"
                    " capacity, role, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        username,
                        display_name,
                        password_hash,
                        capacity,
                        row["role"],
                        utc_now(),
                    ),
                )
                volunteer_id = int(cursor.lastrowid or 0)
                await tx.execute(
                    "UPDATE invitations SET volunteer_id = ? WHERE id = ?",
                    (volunteer_id, row["id"]),
                )
        except StoreError as error:
            if isinstance(error.__cause__, sqlite3.IntegrityError):
                raise ValueError(f"The username {username!r} is taken.") from None
            raise
        return await self.get_volunteer(volunteer_id)

    # Second factor

    async def set_totp(
        self, volunteer_id: int, secret: str, recovery_code_hashes: list[str]
    ) -> None:
        """Store a volunteer's TOTP secret, sealed, with new recovery codes."""
        cipher = self.data_cipher()
        sealed = cipher.encrypt(secret, f"totp:{volunteer_id}")
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
        cipher = self.data_cipher()
        try:
            return cipher.decrypt(row[0], f"totp:{volunteer_id}")
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
        self,
        key: str,
        name: str,
        origins: list[str],
        exit_url: str,
        language: str = "en",
    ) -> Site:
        async with self._transaction() as tx:
            cursor = await tx.execute(
                "INSERT INTO sites (key, name, origins, created_at, exit_url, language)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (key, name, json.dumps(origins), utc_now(), exit_url, language),
            )
            site_id = cursor.lastrowid
        row = await self._fetchone("SELECT * FROM sites WHERE id = ?", (site_id,))
        if row is None:
            raise StoreError("The new site was not found after inserting it.")
        return _site(row)

    async def update_site(
        self,
        site_id: int,
        *,
        name: str,
        origins: list[str],
        exit_url: str,
        greeting: str,
        brand_colour: str,
    ) -> bool:
        """Change a site's settings; returns False when the site is unknown."""
        async with self._transaction() as tx:
            cursor = await tx.execute(
                "UPDATE sites SET name = ?, origins = ?, exit_url = ?, greeting = ?,"
                " brand_colour = ? WHERE id = ?",
                (
                    name,
                    json.dumps(origins),
                    exit_url,
                    greeting,
                    brand_colour,
                    site_id,
                ),
            )
            return cursor.rowcount == 1

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
        self,
        conversation_id: str,
        site_id: int,
        token_hash: str,
        *,
        at: str | None = None,
        channel: str = "chat",
        language: str = "en",
    ) -> Conversation:
        """Insert a queued conversation at the back of the queue.

        ``at`` (ISO 8601 UTC, as ``utc_now``) replaces the current time, for
        imports and generated test data.
        """
        now = at or utc_now()
        async with self._transaction() as tx:
            await tx.execute(
                "INSERT INTO conversations"
                " (id, site_id, channel, status, token_hash, queue_key, created_at,"
                " language) VALUES (?, ?, ?, 'queued', ?,"
                "  (SELECT COALESCE(MAX(queue_key), 0) + 1 FROM conversations), ?, ?)",
                (conversation_id, site_id, channel, token_hash, now, language),
            )
        conversation = await self.get_conversation(conversation_id)
        if conversation is None:
            raise StoreError("The new conversation was not found after inserting it.")
        return conversation

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        row = await self._fetchone(
            "SELECT * FROM conversations WHERE id = ?", (conversation_id,)
        )
        return from_row(Conversation, row) if row else None

    async def get_conversation_by_token_hash(
        self, token_hash: str
    ) -> Conversation | None:
        row = await self._fetchone(
            "SELECT * FROM conversations WHERE token_hash = ?", (token_hash,)
        )
        return from_row(Conversation, row) if row else None

    async def list_open_conversations(self) -> list[Conversation]:
        """Return queued and active chats, queued ones in queue order."""
        rows = await self._fetchall(
            "SELECT * FROM conversations WHERE status IN ('queued', 'active')"
            " AND channel = 'chat' ORDER BY queue_key"
        )
        return [from_row(Conversation, row) for row in rows]

    async def assign_conversation(
        self, conversation_id: str, volunteer_id: int, at: str | None = None
    ) -> bool:
        """Mark a queued conversation active with a volunteer.

        Returns False, changing nothing, when the conversation is not queued; the
        condition in the UPDATE keeps a second relay process from assigning it too.
        """
        async with self._transaction() as tx:
            cursor = await tx.execute(
                "UPDATE conversations SET status = 'active', volunteer_id = ?,"
                " assigned_at = ? WHERE id = ? AND status = 'queued'",
                (volunteer_id, at or utc_now(), conversation_id),
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
        self, conversation_id: str, status: str, reason: str, at: str | None = None
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
                (status, reason, at or utc_now(), conversation_id),
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
        resource: dict[str, str] | None = None,
    ) -> tuple[Message, bool]:
        """Store a message with the conversation's next sequence number.

        Returns the message and True, or the message stored earlier with the same
        sender and ``client_id`` and False. Raises ``ConversationClosedError`` when
        the conversation is over or unknown, ``StoreError`` when the write fails.
        A ``resource`` card is sealed like the body and stored with it.
        """
        pending = _PendingMessage(
            conversation_id, sender, client_id, body, volunteer_id, resource
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
        self._limit_wal(db)
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

    def _limit_wal(self, db: sqlite3.Connection) -> None:
        """Start the WAL over when it is over its limit, in the writer thread.

        When the checkpoint thread requests it, the writer runs a passive
        checkpoint. No other transaction writes meanwhile, so it copies every
        frame that no reader still needs, usually all of them, and the
        transaction that follows starts the log over. The thread has just
        copied most frames, so the batch waits only for the rest and the
        syncs. SQLite's documentation says a passive checkpoint never waits
        for a reader or writer.

        A file over the hard limit calls for the thread's next pass at once.
        A read that began before a checkpoint (a backup) keeps the log from
        starting over, so the next call waits until the file has grown by
        another limit.
        """
        if self._wal_restart_due:
            if self._checkpoint_wal(db):
                self._wal_restart_due = False
            return
        try:
            size = os.stat(self._wal_path).st_size
        except FileNotFoundError:
            return
        if size <= self._wal_hard_limit:
            self._wal_retry_size = self._wal_hard_limit
        elif size > self._wal_retry_size:
            self._wal_retry_size = size + self._wal_size_limit
            self._loop.call_soon_threadsafe(self._checkpoint_due.set)

    def _checkpoint_wal(self, db: sqlite3.Connection) -> bool:
        """Run a passive checkpoint; return False when another one was running."""
        try:
            busy = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[0]
        except sqlite3.Error as error:
            # The batch can still be written, and the next pass requests again.
            logger.error("checkpointing the WAL before a batch failed: %s", error)
            return True
        return not busy

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
            resource=pending.resource,
        )
        inserted = db.execute(
            "INSERT INTO messages"
            " (conversation_id, seq, sender, volunteer_id, client_id, body,"
            " created_at, resource) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (conversation_id, sender, client_id) DO NOTHING",
            (
                message.conversation_id,
                message.seq,
                message.sender,
                pending.volunteer_id,
                message.client_id,
                self._seal(message.body, message.conversation_id, message.seq),
                message.created_at,
                self._seal_resource(message),
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
        cipher = self.data_cipher()
        return cipher.encrypt(body, _message_context(conversation_id, seq))

    def _seal_resource(self, message: Message) -> str | None:
        if message.resource is None:
            return None
        cipher = self.data_cipher()
        return cipher.encrypt(
            json.dumps(message.resource, ensure_ascii=False),
            _resource_context(message.conversation_id, message.seq),
        )

    def _open_resource(self, row: sqlite3.Row) -> dict[str, str] | None:
        sealed = row["resource"]
        if sealed is None:
            return None
        cipher = self.data_cipher()
        try:
            card = json.loads(
                cipher.decrypt(
                    sealed, _resource_context(row["conversation_id"], row["seq"])
                )
            )
        except (DecryptionError, ValueError) as error:
            raise StoreError(
                f"The resource card of message {row['seq']} of"
                f" {row['conversation_id']} cannot be read: {error}"
            ) from error
        if not isinstance(card, dict):
            raise StoreError(
                f"The resource card of message {row['seq']} of"
                f" {row['conversation_id']} is not a JSON object."
            )
        return {str(key): str(value) for key, value in card.items()}

    def _message(self, row: sqlite3.Row) -> Message:
        body: str = row["body"]
        # Bodies written before encryption at rest stay readable until
        # `vso rotate-key` seals them.
        if body.startswith(SEALED_PREFIX + ":"):
            cipher = self.data_cipher()
            try:
                body = cipher.decrypt(
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
            resource=self._open_resource(row),
        )

    async def reseal_messages(self, batch: int = 500) -> int:
        """Seal every body (and its resource card) not sealed with the current
        key; return how many messages were sealed.

        Works in transactions of ``batch`` rows, so a relay can keep running.
        Raises ``StoreError`` when a body cannot be decrypted with any key.
        """
        cipher = self.data_cipher()
        prefix = f"{SEALED_PREFIX}:{cipher.current_key_id}:"
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
                        "UPDATE messages SET body = ?, resource = ?"
                        " WHERE conversation_id = ? AND seq = ?",
                        (
                            self._seal(
                                message.body, message.conversation_id, message.seq
                            ),
                            self._seal_resource(message),
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
        cipher = self.data_cipher()
        prefix = f"{SEALED_PREFIX}:{cipher.current_key_id}:"
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
            sealed = cipher.encrypt(secret, f"totp:{volunteer_id}")
            async with self._transaction() as tx:
                await tx.execute(
                    "UPDATE volunteers SET totp_secret = ? WHERE id = ?",
                    (sealed, volunteer_id),
                )
        return len(rows)

    # Audit log

    async def record_audit(
        self, actor_id: int, action: str, target_kind: str, target_id: int | str
    ) -> AuditEntry:
        """Append an entry to the audit log, with the actor's current display name.

        ``action`` is a dotted lowercase name such as ``site.update``,
        ``target_kind`` a lowercase word such as ``site`` and ``target_id`` an
        integer or an id of letters, digits, ``-`` and ``_``. Raises
        ``ValueError`` for anything else or an unknown actor, so that no free
        text reaches the log.
        """
        if not _AUDIT_ACTION.fullmatch(action):
            raise ValueError(f"Invalid audit action {action!r}; use e.g. site.update.")
        if not _AUDIT_KIND.fullmatch(target_kind):
            raise ValueError(f"Invalid audit target kind {target_kind!r}.")
        target = str(target_id)
        if isinstance(target_id, bool) or not _AUDIT_TARGET.fullmatch(target):
            raise ValueError("Invalid audit target id; use an integer or a short id.")
        async with self._transaction() as tx:
            actor = await tx.fetchone(
                "SELECT display_name FROM volunteers WHERE id = ?", (actor_id,)
            )
            if actor is None:
                raise ValueError(f"Unknown audit actor {actor_id}.")
            cursor = await tx.execute(
                "INSERT INTO audit_log"
                " (created_at, actor_id, actor_name, action, target_kind, target_id)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (utc_now(), actor_id, actor[0], action, target_kind, target),
            )
            entry_id = int(cursor.lastrowid or 0)
        row = await self._fetchone("SELECT * FROM audit_log WHERE id = ?", (entry_id,))
        if row is None:
            raise StoreError("The new audit entry was not found after inserting it.")
        return from_row(AuditEntry, row)

    async def list_audit(
        self, action: str | None = None, before_id: int | None = None, limit: int = 50
    ) -> list[AuditEntry]:
        """Return up to ``limit`` audit entries, newest first.

        ``action`` keeps only entries of that action; ``before_id`` keeps only
        entries older than that id, for the next page.
        """
        limit = max(1, min(limit, AUDIT_PAGE_MAX))
        clauses = []
        params: list[Any] = []
        if action is not None:
            clauses.append("action = ?")
            params.append(action)
        if before_id is not None:
            clauses.append("id < ?")
            params.append(before_id)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = await self._fetchall(
            f"SELECT * FROM audit_log {where} ORDER BY id DESC LIMIT ?",
            (*params, limit),
        )
        return [from_row(AuditEntry, row) for row in rows]

    async def audit_actions(self) -> list[str]:
        """Return the distinct actions in the audit log, sorted."""
        rows = await self._fetchall("SELECT DISTINCT action FROM audit_log ORDER BY 1")
        return [row[0] for row in rows]

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
            result = self._write_one(db, pending, utc_now())
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
            result = self._write_one(db, pending, utc_now())
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
            result = self._write_one(db, pending, utc_now())
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
        cipher = self.data_cipher()
        try:
            return cipher.decrypt(row[0], _notify_context(conversation_id))
        except DecryptionError as error:
            raise StoreError(
                f"The notification address of {conversation_id} cannot be"
                f" decrypted: {error}"
            ) from error

    def _seal_text(self, text: str, context: str) -> str:
        cipher = self.data_cipher()
        return cipher.encrypt(text, context)

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

    # Supervision

    async def transfer_conversation(
        self, conversation_id: str, from_volunteer: int, to_volunteer: int
    ) -> bool:
        """Move an active conversation from one volunteer to another.

        Returns False, changing nothing, when the conversation is not active with
        ``from_volunteer``; the condition keeps a concurrent end or second
        transfer from being overwritten.
        """
        async with self._transaction() as tx:
            cursor = await tx.execute(
                "UPDATE conversations SET volunteer_id = ?"
                " WHERE id = ? AND status = 'active' AND volunteer_id = ?",
                (to_volunteer, conversation_id, from_volunteer),
            )
            return cursor.rowcount == 1

    async def add_whisper(
        self, conversation_id: str, supervisor_id: int, body: str
    ) -> Whisper:
        """Store a sealed whisper after the conversation's latest message.

        Raises ``ConversationClosedError`` when the conversation is over or
        unknown.
        """
        cipher = self.data_cipher()
        now = utc_now()
        async with self._transaction() as tx:
            row = await tx.fetchone(
                "SELECT last_seq FROM conversations"
                " WHERE id = ? AND status IN ('queued', 'active')",
                (conversation_id,),
            )
            if row is None:
                raise ConversationClosedError(conversation_id)
            next_row = await tx.fetchone(
                "SELECT COALESCE(MAX(id), 0) + 1 FROM whispers"
            )
            whisper_id = int(next_row[0]) if next_row else 1
            after_seq = int(row[0])
            sealed = cipher.encrypt(body, _whisper_context(conversation_id, whisper_id))
            await tx.execute(
                "INSERT INTO whispers"
                " (id, conversation_id, supervisor_id, after_seq, body, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (whisper_id, conversation_id, supervisor_id, after_seq, sealed, now),
            )
        return Whisper(whisper_id, conversation_id, supervisor_id, after_seq, body, now)

    async def whispers_of(self, conversation_id: str) -> list[Whisper]:
        """Return a conversation's whispers, oldest first; for staff only."""
        rows = await self._fetchall(
            "SELECT * FROM whispers WHERE conversation_id = ? ORDER BY id",
            (conversation_id,),
        )
        whispers = []
        for row in rows:
            cipher = self.data_cipher()
            try:
                body = cipher.decrypt(
                    row["body"], _whisper_context(conversation_id, row["id"])
                )
            except DecryptionError as error:
                raise StoreError(
                    f"Whisper {row['id']} of {conversation_id} cannot be decrypted:"
                    f" {error}"
                ) from error
            whispers.append(
                Whisper(
                    id=row["id"],
                    conversation_id=conversation_id,
                    supervisor_id=row["supervisor_id"],
                    after_seq=row["after_seq"],
                    body=body,
                    created_at=row["created_at"],
                )
            )
        return whispers

    async def add_support_alert(
        self, volunteer_id: int, conversation_id: str
    ) -> SupportAlert:
        now = utc_now()
        async with self._transaction() as tx:
            cursor = await tx.execute(
                "INSERT INTO support_alerts (volunteer_id, conversation_id, raised_at)"
                " VALUES (?, ?, ?)",
                (volunteer_id, conversation_id, now),
            )
            alert_id = int(cursor.lastrowid or 0)
        return SupportAlert(alert_id, volunteer_id, conversation_id, now)

    async def open_support_alerts(self) -> list[SupportAlert]:
        """Return the alerts no supervisor has acknowledged yet, oldest first."""
        rows = await self._fetchall(
            "SELECT id, volunteer_id, conversation_id, raised_at FROM support_alerts"
            " WHERE acknowledged_at IS NULL ORDER BY id"
        )
        return [SupportAlert(row[0], row[1], row[2], row[3]) for row in rows]

    async def acknowledge_support_alert(
        self, alert_id: int, supervisor_id: int
    ) -> bool:
        """Mark an alert acknowledged; False when unknown or already acknowledged."""
        async with self._transaction() as tx:
            cursor = await tx.execute(
                "UPDATE support_alerts SET acknowledged_at = ?, acknowledged_by = ?"
                " WHERE id = ? AND acknowledged_at IS NULL",
                (utc_now(), supervisor_id, alert_id),
            )
            return cursor.rowcount == 1

    async def add_hard_chat(
        self, volunteer_id: int, conversation_id: str, break_until: str
    ) -> bool:
        """Record that a volunteer found one of their ended chats hard.

        Returns False, storing nothing, when the conversation is not a closed
        one of theirs or is already marked.
        """
        async with self._transaction() as tx:
            owned = await tx.fetchone(
                "SELECT 1 FROM conversations WHERE id = ? AND volunteer_id = ?"
                " AND status IN ('ended', 'abandoned')",
                (conversation_id, volunteer_id),
            )
            marked = await tx.fetchone(
                "SELECT 1 FROM hard_chats WHERE conversation_id = ?",
                (conversation_id,),
            )
            if owned is None or marked is not None:
                return False
            await tx.execute(
                "INSERT INTO hard_chats"
                " (volunteer_id, conversation_id, marked_at, break_until)"
                " VALUES (?, ?, ?, ?)",
                (volunteer_id, conversation_id, utc_now(), break_until),
            )
            return True

    async def end_breaks(self, volunteer_id: int) -> None:
        """Mark a volunteer's running breaks as ended now."""
        async with self._transaction() as tx:
            await tx.execute(
                "UPDATE hard_chats SET break_ended_at = ?"
                " WHERE volunteer_id = ? AND break_ended_at IS NULL",
                (utc_now(), volunteer_id),
            )

    async def volunteer_load(self, day_start: str, week_start: str) -> dict[int, Load]:
        """Return each volunteer's available time, chats and hard chats.

        ``day_start`` and ``week_start`` are ISO 8601 UTC times, the week's not
        after the day's. Available time counts the availability intervals (the
        switch on and a dashboard connected), up to now for one still open.
        Chats count conversations assigned since then, under the volunteer who
        has them now.
        """
        now = utc_now()
        loads: dict[int, Load] = {}
        periods = await self._fetchall(
            "SELECT volunteer_id, started_at, ended_at FROM availability_intervals"
            " WHERE volunteer_id IS NOT NULL AND (ended_at IS NULL OR ended_at > ?)",
            (week_start,),
        )
        for row in periods:
            load = loads.setdefault(row[0], Load())
            end = row[2] or now
            load.available_seconds_week += _overlap_seconds(row[1], end, week_start)
            load.available_seconds_today += _overlap_seconds(row[1], end, day_start)
        chats = await self._fetchall(
            "SELECT volunteer_id, SUM(assigned_at >= ?), COUNT(*) FROM conversations"
            " WHERE volunteer_id IS NOT NULL AND assigned_at >= ?"
            " GROUP BY volunteer_id",
            (day_start, week_start),
        )
        for row in chats:
            load = loads.setdefault(row[0], Load())
            load.chats_today, load.chats_week = int(row[1]), int(row[2])
        hard = await self._fetchall(
            "SELECT volunteer_id, SUM(marked_at >= ?), COUNT(*) FROM hard_chats"
            " WHERE marked_at >= ? GROUP BY volunteer_id",
            (day_start, week_start),
        )
        for row in hard:
            load = loads.setdefault(row[0], Load())
            load.hard_today, load.hard_week = int(row[1]), int(row[2])
        return loads

    async def unanswered_counts(self) -> dict[str, int]:
        """Return, for each open conversation, the visitor messages after the
        latest volunteer message."""
        rows = await self._fetchall(
            "SELECT c.id, (SELECT COUNT(*) FROM messages m"
            "  WHERE m.conversation_id = c.id AND m.sender = 'visitor'"
            "  AND m.seq > (SELECT COALESCE(MAX(v.seq), 0) FROM messages v"
            "   WHERE v.conversation_id = c.id AND v.sender = 'volunteer'))"
            " FROM conversations c WHERE c.status IN ('queued', 'active')"
        )
        return {row[0]: int(row[1]) for row in rows}

    # Saved replies

    async def list_saved_replies(self, language: str | None = None) -> list[SavedReply]:
        """Return the saved replies, of one language when given, by title."""
        if language is None:
            rows = await self._fetchall(
                "SELECT * FROM saved_replies ORDER BY language, title, id"
            )
        else:
            rows = await self._fetchall(
                "SELECT * FROM saved_replies WHERE language = ? ORDER BY title, id",
                (language,),
            )
        return [from_row(SavedReply, row) for row in rows]

    async def get_saved_reply(self, reply_id: int) -> SavedReply | None:
        row = await self._fetchone(
            "SELECT * FROM saved_replies WHERE id = ?", (reply_id,)
        )
        return from_row(SavedReply, row) if row else None

    async def add_saved_reply(self, language: str, title: str, body: str) -> int:
        """Insert a saved reply and return its id."""
        now = utc_now()
        async with self._transaction() as tx:
            cursor = await tx.execute(
                "INSERT INTO saved_replies"
                " (language, title, body, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (language, title, body, now, now),
            )
            return int(cursor.lastrowid or 0)

    async def update_saved_reply(
        self, reply_id: int, language: str, title: str, body: str
    ) -> bool:
        """Change a saved reply; return False when there is none with this id."""
        async with self._transaction() as tx:
            cursor = await tx.execute(
                "UPDATE saved_replies SET language = ?, title = ?, body = ?,"
                " updated_at = ? WHERE id = ?",
                (language, title, body, utc_now(), reply_id),
            )
            return cursor.rowcount == 1

    async def delete_saved_reply(self, reply_id: int) -> bool:
        """Delete a saved reply; return False when there is none with this id."""
        async with self._transaction() as tx:
            cursor = await tx.execute(
                "DELETE FROM saved_replies WHERE id = ?", (reply_id,)
            )
            return cursor.rowcount == 1


@dataclass
class _PendingMessage:
    """One ``add_message`` call waiting for the next group commit."""

    conversation_id: str
    sender: str
    client_id: str
    body: str
    volunteer_id: int | None
    resource: dict[str, str] | None = None
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


def _connect_writer(path: Path, wal_size_limit: int) -> sqlite3.Connection:
    """Open a connection for a thread of the store, with the store's pragmas."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.row_factory = sqlite3.Row
    for pragma in _pragmas(wal_size_limit):
        db.execute(pragma)
    return db


def _pragmas(wal_size_limit: int) -> tuple[str, ...]:
    """Return the settings every connection of the store makes first."""
    return (
        "PRAGMA synchronous = NORMAL",
        "PRAGMA foreign_keys = ON",
        f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}",
        f"PRAGMA journal_size_limit = {wal_size_limit}",
        # The store's checkpoint thread checkpoints, so no commit waits for one.
        "PRAGMA wal_autocheckpoint = 0",
    )


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
        """Run each statement of a script; ``executescript`` would commit first.

        A statement ends at a semicolon that completes it, so the semicolons
        inside a trigger's ``BEGIN … END`` do not split it.
        """
        statement = ""
        for piece in script.split(";"):
            statement += piece + ";"
            if sqlite3.complete_statement(statement):
                if statement.strip(" \n;"):
                    await self._db.execute(statement)
                statement = ""
