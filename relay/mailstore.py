"""Storage of the e-mail channel: threads, imported IMAP messages and the outbox.

``MailStore`` extends a ``Store`` with the ``mail_*`` tables. It writes through
the store's writer thread, so one imported e-mail (its conversation, message,
thread, outbox entries and the UIDVALIDITY and UID it came from) commits in a
single transaction, or not at all. Sender addresses, names, subjects,
Message-IDs and outgoing mail are sealed with the store's data key.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field

from relay.store import (
    ConversationBlockedError,
    Message,
    Store,
    StoreError,
    _PendingMessage,
    utc_now,
)

IMPORTED = "imported"
DUPLICATE = "duplicate"
MATCHED_BOUNCE = "matched bounce"


@dataclass(frozen=True)
class MailThread:
    """An e-mail conversation's correspondent and the Message-IDs of its mail."""

    conversation_id: str
    sender: str
    sender_name: str
    subject: str
    message_ids: list[str]


@dataclass(frozen=True)
class OutgoingMail:
    """A mail for the outbox: ``content`` is the whole message, CR LF ended."""

    kind: str
    message_id: str
    recipient: str
    content: bytes
    seq: int | None = None


@dataclass(frozen=True)
class OutboxEntry:
    id: int
    conversation_id: str | None
    kind: str
    message_id: str
    recipient: str
    content: bytes
    attempts: int


@dataclass
class MailImport:
    """One fetched e-mail and what its import writes.

    With ``new_thread`` set a new conversation is created; otherwise the
    message joins ``conversation_id``. Without ``body`` only the import is
    recorded, as for bounces and auto-replies.
    """

    mailbox: str
    uidvalidity: int
    uid: int
    message_id_hash: str | None
    outcome: str
    conversation_id: str | None = None
    body: str | None = None
    client_id: str = ""
    message_id: str | None = None
    new_thread: NewThread | None = None
    outgoing: list[OutgoingMail] = field(default_factory=list)
    bounce: Bounce | None = None


@dataclass(frozen=True)
class BouncedReply:
    """The outbox reply that a bounce names."""

    outbox_id: int
    conversation_id: str
    seq: int


@dataclass(frozen=True)
class Bounce:
    """A bounce to record on outbox mail: its RFC 3463 status code and RFC 3464
    action ("failed" or "delayed"), each None when the bounce gave none."""

    outbox_id: int
    status: str | None
    action: str | None


@dataclass(frozen=True)
class NewThread:
    site_id: int
    token_hash: str
    sender_hash: str
    sender: str
    sender_name: str
    subject: str


def _context(kind: str, key: str) -> str:
    return f"mail-{kind}:{key}"


class MailStore:
    """The e-mail tables of one ``Store``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _seal(self, text: str, kind: str, key: str) -> str:
        return self.store._seal_text(text, _context(kind, key))

    def _open(self, sealed: str, kind: str, key: str) -> str:
        cipher = self.store.data_cipher()
        try:
            return cipher.decrypt(sealed, _context(kind, key))
        except Exception as error:
            raise StoreError(
                f"The mail {kind} of {key} cannot be decrypted."
            ) from error

    async def last_uid(self, mailbox: str, uidvalidity: int) -> int:
        """Return the highest UID imported from ``mailbox`` at ``uidvalidity``."""
        row = await self.store.fetchone(
            "SELECT COALESCE(MAX(uid), 0) FROM mail_imports"
            " WHERE mailbox = ? AND uidvalidity = ?",
            (mailbox, uidvalidity),
        )
        return int(row[0]) if row else 0

    async def was_imported(
        self, mailbox: str, uidvalidity: int, uid: int, message_id_hash: str | None
    ) -> bool:
        """Return True when this UID, or mail with this Message-ID, was imported."""
        row = await self.store.fetchone(
            "SELECT 1 FROM mail_imports WHERE (mailbox = ? AND uidvalidity = ?"
            " AND uid = ?) OR message_id_hash = ?",
            (mailbox, uidvalidity, uid, message_id_hash),
        )
        return row is not None

    async def threads_by_token(self, token_hashes: list[str]) -> dict[str, str]:
        """Return the conversation id and sender hash of each known token hash,
        as ``{conversation_id: sender_hash}``."""
        if not token_hashes:
            return {}
        marks = ", ".join("?" * len(token_hashes))
        rows = await self.store.fetchall(
            "SELECT conversation_id, sender_hash FROM mail_threads"
            f" WHERE token_hash IN ({marks})",
            tuple(token_hashes),
        )
        return {row[0]: row[1] for row in rows}

    async def get_thread(self, conversation_id: str) -> MailThread | None:
        """Return the thread of an e-mail conversation, or None for another kind."""
        row = await self.store.fetchone(
            "SELECT * FROM mail_threads WHERE conversation_id = ?", (conversation_id,)
        )
        if row is None:
            return None
        return MailThread(
            conversation_id=conversation_id,
            sender=self._open(row["sender"], "sender", conversation_id),
            sender_name=self._open(row["sender_name"], "name", conversation_id),
            subject=self._open(row["subject"], "subject", conversation_id),
            message_ids=json.loads(
                self._open(row["message_ids"], "ids", conversation_id)
            ),
        )

    async def record_import(self, record: MailImport) -> tuple[str, Message | None]:
        """Write one fetched e-mail in a single transaction.

        Returns ("duplicate", None) when its UID was imported before, and then
        writes nothing, or when mail with its Message-ID was, and then records
        only the UID. Otherwise returns the outcome and the
        stored message, if any. Mail to a conversation whose sender was blocked
        is recorded with the outcome "blocked" and stores no message.
        """
        pending = (
            _PendingMessage(
                record.conversation_id or "",
                "visitor",
                record.client_id,
                record.body or "",
                None,
            )
            if record.body is not None and record.conversation_id is not None
            else None
        )
        sealed = self._seal_import(record)

        def work(db: sqlite3.Connection) -> tuple[str, Message | None]:
            seen = db.execute(
                "SELECT 1 FROM mail_imports WHERE mailbox = ? AND uidvalidity = ?"
                " AND uid = ?",
                (record.mailbox, record.uidvalidity, record.uid),
            ).fetchone()
            if seen is not None:
                return DUPLICATE, None
            copy = db.execute(
                "SELECT 1 FROM mail_imports WHERE message_id_hash = ?",
                (record.message_id_hash,),
            ).fetchone()
            if copy is not None or record.outcome == DUPLICATE:
                # Recorded under its own UID, so that later polls skip it.
                self._insert_import(db, record, DUPLICATE, with_message_id=False)
                return DUPLICATE, None
            outcome = record.outcome
            message: Message | None = None
            if pending is not None:
                try:
                    message = self._write_message(db, record, pending, sealed)
                except ConversationBlockedError:
                    outcome, message = "blocked", None
            if message is not None or pending is None:
                for outgoing in record.outgoing:
                    self._insert_outgoing(db, record.conversation_id, outgoing)
            if record.bounce is not None:
                self._mark_bounced(db, record.bounce)
            self._insert_import(db, record, outcome, with_message_id=True)
            return outcome, message

        return await self.store._write_in_writer(work)

    @staticmethod
    def _insert_import(
        db: sqlite3.Connection, record: MailImport, outcome: str, with_message_id: bool
    ) -> None:
        db.execute(
            "INSERT INTO mail_imports (mailbox, uidvalidity, uid, message_id_hash,"
            " conversation_id, outcome, imported_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                record.mailbox,
                record.uidvalidity,
                record.uid,
                record.message_id_hash if with_message_id else None,
                record.conversation_id if outcome != DUPLICATE else None,
                outcome,
                utc_now(),
            ),
        )

    @staticmethod
    def _mark_bounced(db: sqlite3.Connection, bounce: Bounce) -> None:
        """Record a bounce on its outbox mail. A later delay never replaces a
        failure, because a delay report can arrive after the final one."""
        db.execute(
            "UPDATE mail_outbox SET bounced_at = ?, bounce_status = ?,"
            " bounce_action = ? WHERE id = ?"
            " AND NOT (bounce_action IS 'failed' AND ? IS NOT 'failed')",
            (utc_now(), bounce.status, bounce.action, bounce.outbox_id, bounce.action),
        )

    def _seal_import(self, record: MailImport) -> dict[str, str]:
        """Seal a new thread's fields before the transaction, off the writer."""
        thread = record.new_thread
        cid = record.conversation_id or ""
        if thread is None:
            return {}
        return {
            "sender": self._seal(thread.sender, "sender", cid),
            "name": self._seal(thread.sender_name, "name", cid),
            "subject": self._seal(thread.subject, "subject", cid),
            "ids": self._seal("[]", "ids", cid),
        }

    def _write_message(
        self,
        db: sqlite3.Connection,
        record: MailImport,
        pending: _PendingMessage,
        sealed: dict[str, str],
    ) -> Message:
        """Store the message, creating its conversation or reopening it."""
        cid = pending.conversation_id
        now = utc_now()
        thread = record.new_thread
        if thread is not None:
            # As ``Store.create_inbox_conversation`` writes them: inbox
            # conversations never enter the chat queue.
            db.execute(
                "INSERT INTO conversations (id, site_id, channel, status,"
                " token_hash, queue_key, created_at)"
                " VALUES (?, ?, 'email', 'active', ?, 0, ?)",
                (cid, thread.site_id, f"inbox:{cid}", now),
            )
            db.execute(
                "INSERT INTO inbox (conversation_id, state, updated_at)"
                " VALUES (?, 'waiting', ?)",
                (cid, now),
            )
            db.execute(
                "INSERT INTO mail_threads (conversation_id, token_hash, sender_hash,"
                " sender, sender_name, subject, message_ids)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    cid,
                    thread.token_hash,
                    thread.sender_hash,
                    sealed["sender"],
                    sealed["name"],
                    sealed["subject"],
                    sealed["ids"],
                ),
            )
            message_ids: list[str] = []
        else:
            row = db.execute(
                "SELECT inbox.blocked_at, mail_threads.message_ids FROM inbox"
                " JOIN mail_threads USING (conversation_id)"
                " WHERE conversation_id = ?",
                (cid,),
            ).fetchone()
            if row is None:
                raise StoreError(f"The e-mail conversation {cid} was not found.")
            if row["blocked_at"] is not None:
                raise ConversationBlockedError(cid)
            message_ids = json.loads(self._open(row["message_ids"], "ids", cid))
            db.execute(
                "UPDATE conversations SET status = 'active', ended_at = NULL,"
                " end_reason = NULL WHERE id = ?",
                (cid,),
            )
        result = self.store._write_one(db, pending, utc_now())
        if isinstance(result, Exception):
            raise result
        message = result[0]
        if thread is None:
            db.execute(
                "UPDATE inbox SET updated_at = ?, state = CASE"
                " WHEN claimed_by IS NULL THEN 'waiting' ELSE 'claimed' END"
                " WHERE conversation_id = ?",
                (message.created_at, cid),
            )
        if record.message_id is not None:
            self._append_message_id(db, cid, message_ids, record.message_id)
        return message

    def _append_message_id(
        self, db: sqlite3.Connection, cid: str, message_ids: list[str], new: str
    ) -> None:
        if new not in message_ids:
            message_ids = [*message_ids, new][-50:]
        db.execute(
            "UPDATE mail_threads SET message_ids = ? WHERE conversation_id = ?",
            (self._seal(json.dumps(message_ids), "ids", cid), cid),
        )

    def _insert_outgoing(
        self, db: sqlite3.Connection, cid: str | None, outgoing: OutgoingMail
    ) -> None:
        now = utc_now()
        db.execute(
            "INSERT OR IGNORE INTO mail_outbox (conversation_id, seq, kind,"
            " message_id, recipient, content, next_attempt_at, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                cid,
                outgoing.seq,
                outgoing.kind,
                outgoing.message_id,
                self._seal(outgoing.recipient, "recipient", outgoing.message_id),
                self._seal(
                    outgoing.content.decode("utf-8", "surrogateescape"),
                    "content",
                    outgoing.message_id,
                ),
                now,
                now,
            ),
        )

    async def queue_outgoing(
        self, conversation_id: str | None, outgoing: OutgoingMail
    ) -> bool:
        """Put mail in the outbox and add its Message-ID to the thread.

        Returns False, changing nothing, when the outbox already has mail of this
        kind for this conversation and sequence number.
        """

        def work(db: sqlite3.Connection) -> bool:
            if outgoing.seq is not None:
                exists = db.execute(
                    "SELECT 1 FROM mail_outbox WHERE conversation_id = ? AND seq = ?"
                    " AND kind = ?",
                    (conversation_id, outgoing.seq, outgoing.kind),
                ).fetchone()
                if exists is not None:
                    return False
            self._insert_outgoing(db, conversation_id, outgoing)
            if conversation_id is not None:
                row = db.execute(
                    "SELECT message_ids FROM mail_threads WHERE conversation_id = ?",
                    (conversation_id,),
                ).fetchone()
                if row is not None:
                    ids = json.loads(self._open(row[0], "ids", conversation_id))
                    self._append_message_id(
                        db, conversation_id, ids, outgoing.message_id.strip("<>")
                    )
            return True

        return await self.store._write_in_writer(work)

    async def unqueued_replies(self, limit: int = 100) -> list[Message]:
        """Return volunteers' messages in e-mail conversations not yet in the
        outbox, oldest first."""
        rows = await self.store.fetchall(
            "SELECT messages.* FROM messages"
            " JOIN mail_threads USING (conversation_id)"
            " WHERE messages.sender = 'volunteer' AND NOT EXISTS ("
            " SELECT 1 FROM mail_outbox WHERE mail_outbox.conversation_id ="
            " messages.conversation_id AND mail_outbox.seq = messages.seq"
            " AND mail_outbox.kind = 'reply')"
            " ORDER BY messages.created_at LIMIT ?",
            (limit,),
        )
        return [self.store._message(row) for row in rows]

    async def due_outgoing(self, now: str, limit: int = 20) -> list[OutboxEntry]:
        """Return unsent outbox mail whose next attempt is due, oldest first."""
        rows = await self.store.fetchall(
            "SELECT * FROM mail_outbox WHERE sent_at IS NULL AND next_attempt_at <= ?"
            " ORDER BY next_attempt_at, id LIMIT ?",
            (now, limit),
        )
        return [
            OutboxEntry(
                id=row["id"],
                conversation_id=row["conversation_id"],
                kind=row["kind"],
                message_id=row["message_id"],
                recipient=self._open(row["recipient"], "recipient", row["message_id"]),
                content=self._open(row["content"], "content", row["message_id"]).encode(
                    "utf-8", "surrogateescape"
                ),
                attempts=row["attempts"],
            )
            for row in rows
        ]

    async def next_attempt_at(self) -> str | None:
        """Return when the earliest unsent mail is due, or None when none waits."""
        row = await self.store.fetchone(
            "SELECT MIN(next_attempt_at) FROM mail_outbox WHERE sent_at IS NULL"
        )
        return None if row is None else row[0]

    async def mark_sent(self, entry_id: int) -> None:
        """Mark outbox mail sent and drop its content and recipient."""
        async with self.store.transaction() as tx:
            await tx.execute(
                "UPDATE mail_outbox SET sent_at = ?, attempts = attempts + 1,"
                " content = '', recipient = '', last_error = NULL WHERE id = ?",
                (utc_now(), entry_id),
            )

    async def mark_failed(self, entry_id: int, error: str, retry_at: str) -> None:
        """Record a failed attempt; the mail is tried again at ``retry_at``."""
        async with self.store.transaction() as tx:
            await tx.execute(
                "UPDATE mail_outbox SET attempts = attempts + 1, last_error = ?,"
                " next_attempt_at = ? WHERE id = ?",
                (error[:300], retry_at, entry_id),
            )

    async def outbox_counts(self) -> dict[str, int]:
        """Return how many outbox mails are sent and unsent."""
        row = await self.store.fetchone(
            "SELECT COUNT(sent_at), COUNT(*) - COUNT(sent_at) FROM mail_outbox"
        )
        return {"sent": int(row[0]), "unsent": int(row[1])} if row else {}

    async def deliveries(self, conversation_id: str) -> dict[int, Delivery]:
        """Return the delivery of each reply in a conversation, by sequence number."""
        rows = await self.store.fetchall(
            "SELECT seq, sent_at, attempts, last_error, bounced_at, bounce_status,"
            " bounce_action FROM mail_outbox"
            " WHERE conversation_id = ? AND kind = 'reply'",
            (conversation_id,),
        )
        return {
            row["seq"]: Delivery(
                sent_at=row["sent_at"],
                attempts=row["attempts"],
                failed=row["last_error"] is not None,
                bounced_at=row["bounced_at"],
                bounce_status=row["bounce_status"],
                bounce_action=row["bounce_action"],
            )
            for row in rows
        }

    async def find_reply(self, message_ids: Sequence[str]) -> BouncedReply | None:
        """Return the outbox reply whose Message-ID comes first in
        ``message_ids`` (given without angle brackets), or None."""
        if not message_ids:
            return None
        bracketed = [f"<{message_id}>" for message_id in message_ids]
        marks = ", ".join("?" * len(bracketed))
        rows = await self.store.fetchall(
            "SELECT id, conversation_id, seq, message_id FROM mail_outbox"
            f" WHERE kind = 'reply' AND message_id IN ({marks})",
            tuple(bracketed),
        )
        by_id = {row["message_id"]: row for row in rows}
        for message_id in bracketed:
            row = by_id.get(message_id)
            if row is not None:
                return BouncedReply(row["id"], row["conversation_id"], row["seq"])
        return None

    async def undelivered(self, conversation_ids: Sequence[str]) -> set[str]:
        """Return those of ``conversation_ids`` whose newest reply bounced.

        Only the newest reply counts, so that a conversation no longer shows
        as undelivered once a volunteer wrote again.
        """
        if not conversation_ids:
            return set()
        marks = ", ".join("?" * len(conversation_ids))
        rows = await self.store.fetchall(
            "SELECT conversation_id FROM mail_outbox AS reply"
            f" WHERE conversation_id IN ({marks}) AND kind = 'reply'"
            " AND bounced_at IS NOT NULL AND seq = ("
            " SELECT MAX(seq) FROM mail_outbox AS newer"
            " WHERE newer.conversation_id = reply.conversation_id"
            " AND newer.kind = 'reply')",
            tuple(conversation_ids),
        )
        return {row["conversation_id"] for row in rows}


@dataclass(frozen=True)
class Delivery:
    """A volunteer's reply on its way out (sent, or waiting to retry) and the
    bounce that came back for it, if any."""

    sent_at: str | None
    attempts: int
    failed: bool
    bounced_at: str | None = None
    bounce_status: str | None = None
    bounce_action: str | None = None


async def purge_mail_records(store: Store, cutoff: str) -> tuple[int, int]:
    """Delete import records and sent outbox rows older than ``cutoff``.

    The newest import record of each mailbox and UIDVALIDITY stays, because
    the next poll starts after its UID. Returns how many import records and
    outbox rows were deleted.
    """
    async with store.transaction() as tx:
        imports = await tx.execute(
            "DELETE FROM mail_imports WHERE imported_at < ? AND EXISTS ("
            " SELECT 1 FROM mail_imports AS newer"
            " WHERE newer.mailbox = mail_imports.mailbox"
            " AND newer.uidvalidity = mail_imports.uidvalidity"
            " AND newer.uid > mail_imports.uid)",
            (cutoff,),
        )
        outbox = await tx.execute(
            "DELETE FROM mail_outbox WHERE sent_at IS NOT NULL AND sent_at < ?",
            (cutoff,),
        )
        return int(imports.rowcount), int(outbox.rowcount)


# Sealed columns of the mail tables: (table, key column, column, context kind).
_SEALED_COLUMNS = (
    ("mail_threads", "conversation_id", "sender", "sender"),
    ("mail_threads", "conversation_id", "sender_name", "name"),
    ("mail_threads", "conversation_id", "subject", "subject"),
    ("mail_threads", "conversation_id", "message_ids", "ids"),
    ("mail_outbox", "message_id", "recipient", "recipient"),
    ("mail_outbox", "message_id", "content", "content"),
)


async def reseal_mail(store: Store) -> int:
    """Seal every mail value not sealed with the current key; return how many.

    Erased values of sent mail stay empty. Raises ``StoreError`` when a value
    cannot be decrypted with any configured key.
    """
    cipher = store.data_cipher()
    mail = MailStore(store)
    total = 0
    for table, key_column, column, kind in _SEALED_COLUMNS:
        rows = await store.fetchall(
            f"SELECT {key_column}, {column} FROM {table} WHERE {column} != ''"
        )
        stale = [row for row in rows if not cipher.is_current(row[1])]
        for key, sealed in stale:
            value = mail._seal(mail._open(sealed, kind, key), kind, key)
            async with store.transaction() as tx:
                await tx.execute(
                    f"UPDATE {table} SET {column} = ? WHERE {key_column} = ?",
                    (value, key),
                )
        total += len(stale)
    return total
