"""Storage of case notes, their labels, the post-chat question and statistics.

``CaseStore`` works on a ``Store``'s connection, write lock and data cipher, so
its writes are ordered with every other write. The tables come from the last
migration in ``relay/store.py``. ``conversation_statistics`` contains one row of
numbers per conversation; that row outlives the conversation, its messages and
its case note, so statistics do not change when transcripts are purged.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass

from relay.crypto import DecryptionError
from relay.store import Store, StoreError, from_row, utc_now

logger = logging.getLogger("relay.casestore")

LABEL_KINDS = ("category", "referral")
MAX_LABEL_CHARS = 80
MAX_NOTE_CHARS = 10_000


class LabelError(ValueError):
    """A label name or kind is invalid, or the name is already taken."""


@dataclass(frozen=True)
class Label:
    """A category (type of crime) or a referral target that case notes can pick."""

    id: int
    kind: str
    name: str
    position: int
    retired: bool


@dataclass(frozen=True)
class CaseNote:
    """A conversation's note text and the labels chosen for it."""

    conversation_id: str
    note: str
    label_ids: frozenset[int]
    author_id: int | None
    updated_at: str | None


@dataclass(frozen=True)
class ClosedConversation:
    """A closed, answered conversation as the case-note pages list it."""

    conversation_id: str
    site_id: int
    volunteer_id: int
    created_at: str
    ended_at: str
    has_note: bool


@dataclass(frozen=True)
class StatisticRow:
    """The numbers of one conversation, as statistics read them.

    ``started_at`` is UTC to the minute (``YYYY-MM-DDTHH:MMZ``). ``wait_seconds``
    is the time to the first answer, None when nobody answered; ``total_seconds``
    is the time from start to end, None while the conversation is open.
    """

    started_at: str
    site_id: int
    channel: str
    wait_seconds: int | None
    total_seconds: int | None
    end_reason: str | None
    helped: bool | None
    rating: int | None
    label_ids: frozenset[int]


def _note_context(conversation_id: str) -> str:
    """Return the associated data that binds a sealed note to its conversation."""
    return f"case-note:{conversation_id}"


def clean_label_name(name: str) -> str:
    """Return a label name with its white space collapsed; raise ``LabelError``."""
    cleaned = " ".join(name.split())
    if not cleaned:
        raise LabelError("The name is empty. Enter a name.")
    if len(cleaned) > MAX_LABEL_CHARS:
        raise LabelError(
            f"The name has {len(cleaned)} characters; use at most {MAX_LABEL_CHARS}."
        )
    return cleaned


class CaseStore:
    """Case notes, labels, post-chat answers, availability and statistics rows."""

    def __init__(self, store: Store) -> None:
        self._store = store

    # Labels

    async def list_labels(self, kind: str | None = None) -> list[Label]:
        """Return labels of one kind (or both), retired ones included, in order."""
        sql = "SELECT * FROM case_labels"
        params: tuple[str, ...] = ()
        if kind is not None:
            sql += " WHERE kind = ?"
            params = (kind,)
        rows = await self._store.fetchall(sql + " ORDER BY kind, position, id", params)
        return [_label(row) for row in rows]

    async def get_label(self, label_id: int) -> Label | None:
        row = await self._store.fetchone(
            "SELECT * FROM case_labels WHERE id = ?", (label_id,)
        )
        return _label(row) if row else None

    async def add_label(self, kind: str, name: str) -> Label:
        """Add a label at the end of its list; raises ``LabelError``."""
        if kind not in LABEL_KINDS:
            raise LabelError(f"The kind {kind!r} is invalid; use category or referral.")
        cleaned = clean_label_name(name)
        async with self._store.transaction() as tx:
            if await tx.fetchone(
                "SELECT 1 FROM case_labels WHERE kind = ? AND name = ?",
                (kind, cleaned),
            ):
                raise LabelError(f"A {kind} named {cleaned!r} already exists.")
            cursor = await tx.execute(
                "INSERT INTO case_labels (kind, name, position) VALUES (?, ?,"
                " (SELECT COALESCE(MAX(position), 0) + 1 FROM case_labels"
                "  WHERE kind = ?))",
                (kind, cleaned, kind),
            )
            label_id = int(cursor.lastrowid or 0)
        label = await self.get_label(label_id)
        if label is None:
            raise StoreError("The new label was not found after inserting it.")
        return label

    async def rename_label(self, label_id: int, name: str) -> bool:
        """Rename a label; returns False for an unknown id, raises ``LabelError``.

        Statistics count labels by id, so old conversations show the new name.
        """
        cleaned = clean_label_name(name)
        async with self._store.transaction() as tx:
            row = await tx.fetchone(
                "SELECT kind FROM case_labels WHERE id = ?", (label_id,)
            )
            if row is None:
                return False
            if await tx.fetchone(
                "SELECT 1 FROM case_labels WHERE kind = ? AND name = ? AND id != ?",
                (row["kind"], cleaned, label_id),
            ):
                raise LabelError(f"A {row['kind']} named {cleaned!r} already exists.")
            await tx.execute(
                "UPDATE case_labels SET name = ? WHERE id = ?", (cleaned, label_id)
            )
            return True

    async def set_label_retired(self, label_id: int, retired: bool) -> bool:
        """Retire a label (new notes cannot pick it) or bring it back.

        Retired labels stay on the notes and in the statistics that use them.
        Returns False for an unknown id.
        """
        async with self._store.transaction() as tx:
            cursor = await tx.execute(
                "UPDATE case_labels SET retired_at = ? WHERE id = ?",
                (utc_now() if retired else None, label_id),
            )
            return cursor.rowcount == 1

    # Case notes

    async def get_case_note(self, conversation_id: str) -> CaseNote:
        """Return the note of a conversation, empty when none was written yet.

        Raises ``StoreError`` when the note cannot be decrypted.
        """
        row = await self._store.fetchone(
            "SELECT * FROM case_notes WHERE conversation_id = ?", (conversation_id,)
        )
        label_rows = await self._store.fetchall(
            "SELECT label_id FROM statistic_labels JOIN conversation_statistics s"
            " ON s.id = statistic_id WHERE s.conversation_id = ?",
            (conversation_id,),
        )
        labels = frozenset(int(label_row[0]) for label_row in label_rows)
        if row is None:
            return CaseNote(conversation_id, "", labels, None, None)
        return CaseNote(
            conversation_id=conversation_id,
            note=self._open_note(row["note"], conversation_id),
            label_ids=labels,
            author_id=row["author_id"],
            updated_at=row["updated_at"],
        )

    async def save_case_note(
        self,
        conversation_id: str,
        author_id: int,
        note: str,
        label_ids: frozenset[int],
    ) -> bool:
        """Store the note (sealed) and replace the conversation's labels.

        Returns False, storing nothing, when the conversation is unknown, deleted
        or still open. Raises ``LabelError`` for an unknown label id or a note
        over ``MAX_NOTE_CHARS``.
        """
        if len(note) > MAX_NOTE_CHARS:
            raise LabelError(
                f"The note has {len(note):,} characters; shorten it to"
                f" {MAX_NOTE_CHARS:,} or fewer."
            )
        sealed = self._seal_note(note, conversation_id)
        async with self._store.transaction() as tx:
            row = await tx.fetchone(
                "SELECT s.id FROM conversation_statistics s JOIN conversations c"
                " ON c.id = s.conversation_id WHERE c.id = ?"
                " AND c.status IN ('ended', 'abandoned')",
                (conversation_id,),
            )
            if row is None:
                return False
            statistic_id = int(row[0])
            known = {
                int(label_row[0])
                for label_row in await tx.fetchall("SELECT id FROM case_labels")
            }
            unknown = sorted(label_ids - known)
            if unknown:
                raise LabelError(f"The labels {unknown} do not exist.")
            await tx.execute(
                "INSERT INTO case_notes (conversation_id, note, author_id, updated_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (conversation_id) DO UPDATE SET"
                " note = excluded.note, author_id = excluded.author_id,"
                " updated_at = excluded.updated_at",
                (conversation_id, sealed, author_id, utc_now()),
            )
            await tx.execute(
                "DELETE FROM statistic_labels WHERE statistic_id = ?", (statistic_id,)
            )
            for label_id in sorted(label_ids):
                await tx.execute(
                    "INSERT INTO statistic_labels (statistic_id, label_id)"
                    " VALUES (?, ?)",
                    (statistic_id, label_id),
                )
        return True

    async def list_closed_conversations(
        self, volunteer_id: int | None, only_without_note: bool, limit: int = 200
    ) -> list[ClosedConversation]:
        """Return closed conversations that a volunteer answered, newest first.

        ``volunteer_id`` None lists every volunteer's conversations.
        """
        sql = (
            "SELECT c.id, c.site_id, c.volunteer_id, c.created_at, c.ended_at,"
            " n.conversation_id IS NOT NULL AS has_note FROM conversations c"
            " LEFT JOIN case_notes n ON n.conversation_id = c.id"
            " WHERE c.status IN ('ended', 'abandoned') AND c.volunteer_id IS NOT NULL"
        )
        params: list[object] = []
        if volunteer_id is not None:
            sql += " AND c.volunteer_id = ?"
            params.append(volunteer_id)
        if only_without_note:
            sql += " AND n.conversation_id IS NULL"
        sql += " ORDER BY c.ended_at DESC LIMIT ?"
        params.append(limit)
        rows = await self._store.fetchall(sql, tuple(params))
        return [
            from_row(
                ClosedConversation,
                row,
                conversation_id=row["id"],
                has_note=bool(row["has_note"]),
            )
            for row in rows
        ]

    def _seal_note(self, note: str, conversation_id: str) -> str:
        cipher = self._store.data_cipher()
        return cipher.encrypt(note, _note_context(conversation_id))

    def _open_note(self, stored: str, conversation_id: str) -> str:
        cipher = self._store.data_cipher()
        try:
            return cipher.decrypt(stored, _note_context(conversation_id))
        except DecryptionError as error:
            raise StoreError(
                f"The case note of {conversation_id} cannot be decrypted: {error}"
            ) from error

    async def reseal_case_notes(self) -> int:
        """Seal every note not sealed with the current key; return how many.

        Raises ``StoreError`` when a note cannot be decrypted with any key.
        """
        cipher = self._store.data_cipher()
        rows = await self._store.fetchall(
            "SELECT conversation_id, note FROM case_notes"
        )
        count = 0
        for row in rows:
            if cipher.is_current(row["note"]):
                continue
            conversation_id = row["conversation_id"]
            sealed = self._seal_note(
                self._open_note(row["note"], conversation_id), conversation_id
            )
            async with self._store.transaction() as tx:
                await tx.execute(
                    "UPDATE case_notes SET note = ? WHERE conversation_id = ?"
                    " AND note = ?",
                    (sealed, conversation_id, row["note"]),
                )
            count += 1
        return count

    # The post-chat question

    async def record_feedback(
        self, conversation_id: str, helped: bool | None, rating: int | None
    ) -> bool:
        """Store a visitor's answers to the post-chat question, once.

        Returns False, storing nothing, when the conversation is unknown or open,
        or was answered before. Raises ``ValueError`` for a rating outside 1 to 5.
        """
        if rating is not None and not 1 <= rating <= 5:
            raise ValueError(f"The rating {rating} is invalid; use 1 to 5.")
        async with self._store.transaction() as tx:
            cursor = await tx.execute(
                "UPDATE conversation_statistics SET feedback_given = 1, helped = ?,"
                " rating = ? WHERE conversation_id = ? AND feedback_given = 0"
                " AND total_seconds IS NOT NULL",
                (None if helped is None else int(helped), rating, conversation_id),
            )
            return cursor.rowcount == 1

    # Availability

    async def open_availability(self, volunteer_id: int, at: str | None = None) -> None:
        """Start an interval of the volunteer's available time, unless one is open."""
        async with self._store.transaction() as tx:
            if await tx.fetchone(
                "SELECT 1 FROM availability_intervals"
                " WHERE volunteer_id = ? AND ended_at IS NULL",
                (volunteer_id,),
            ):
                return
            await tx.execute(
                "INSERT INTO availability_intervals (volunteer_id, started_at)"
                " VALUES (?, ?)",
                (volunteer_id, at or utc_now()),
            )

    async def close_availability(
        self, volunteer_id: int | None, at: str | None = None
    ) -> int:
        """End one volunteer's open interval, or all for None; return how many."""
        sql = "UPDATE availability_intervals SET ended_at = ? WHERE ended_at IS NULL"
        params: tuple[object, ...] = (at or utc_now(),)
        if volunteer_id is not None:
            sql += " AND volunteer_id = ?"
            params = (*params, volunteer_id)
        async with self._store.transaction() as tx:
            cursor = await tx.execute(sql, params)
            return int(cursor.rowcount)

    async def availability_between(
        self, start: str, end: str
    ) -> list[tuple[str, str | None]]:
        """Return (start, end) of the intervals that overlap ``start`` to ``end``.

        An interval that is still open has the end None.
        """
        rows = await self._store.fetchall(
            "SELECT started_at, ended_at FROM availability_intervals"
            " WHERE started_at < ? AND (ended_at IS NULL OR ended_at > ?)"
            " ORDER BY started_at",
            (end, start),
        )
        return [(row[0], row[1]) for row in rows]

    # Statistics

    async def statistic_rows(self, start: str, end: str) -> list[StatisticRow]:
        """Return the rows of conversations started from ``start`` until ``end``.

        Both bounds are UTC in the form ``YYYY-MM-DDTHH:MMZ``.
        """
        rows = await self._store.fetchall(
            "SELECT s.*, group_concat(l.label_id) AS label_ids"
            " FROM conversation_statistics s"
            " LEFT JOIN statistic_labels l ON l.statistic_id = s.id"
            " WHERE s.started_at >= ? AND s.started_at < ?"
            " GROUP BY s.id ORDER BY s.started_at, s.id",
            (start, end),
        )
        return [_statistic_row(row) for row in rows]


def _label(row: sqlite3.Row) -> Label:
    return from_row(Label, row, retired=row["retired_at"] is not None)


def _statistic_row(row: sqlite3.Row) -> StatisticRow:
    label_text = row["label_ids"] or ""
    return from_row(
        StatisticRow,
        row,
        helped=None if row["helped"] is None else bool(row["helped"]),
        label_ids=frozenset(int(part) for part in label_text.split(",") if part),
    )
