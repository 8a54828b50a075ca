"""The e-mail channel: mail in over IMAP, volunteers' replies out over SMTP.

``MailService`` runs two supervised background tasks inside ``vso serve``.
The fetcher polls the service's mailbox every ``VSO_MAIL_POLL_SECONDS``, imports
each new message (see ``ingest``) and then flags it seen. The sender turns
volunteers' replies in e-mail conversations into outbox mail and sends the
outbox, retrying failures with a growing delay.

Idempotency: mail is imported in UID order, and the import commits together
with its UIDVALIDITY, UID and Message-ID, so a relay killed before it flagged
the mail seen skips it next time. Sending is at least once: mail is marked
sent after the SMTP server accepted it, so a crash between the two sends it
again, with the same Message-ID.
"""

from __future__ import annotations

import asyncio
import hashlib
import imaplib
import logging
import secrets
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiosmtplib
from prometheus_client import Counter, Gauge

from relay import metrics
from relay.i18n import gettext as _
from relay.mailbounce import read_bounce
from relay.mailimap import ImapMailbox, MailError
from relay.mailparse import BOUNCE, PERSON, ParsedMail, log_summary, parse_mail
from relay.mailsmtp import send_mail, smtp_reason
from relay.mailstore import (
    DUPLICATE,
    IMPORTED,
    MATCHED_BOUNCE,
    Bounce,
    MailImport,
    MailStore,
    NewThread,
    OutgoingMail,
    purge_mail_records,
)
from relay.mailtext import automatic_reply, reply_waiting_text, volunteer_text
from relay.mailthread import (
    compose,
    new_message_id,
    reply_token,
    sender_hash,
    token_hash,
    tokens_in,
)
from relay.settings import Settings
from relay.store import Message, Store, StoreError, utc_ago, utc_now

logger = logging.getLogger("relay.mail")

IMPORTS = Counter(
    "vso_mail_imported",
    "Fetched e-mails, by outcome: imported, duplicate, blocked, matched_bounce"
    " or ignored_KIND.",
    ["outcome"],
    registry=metrics.REGISTRY,
)
BOUNCES = Counter(
    "vso_mail_bounces",
    "Bounces matched to a sent reply, by RFC 3464 action: failed, delayed or unknown.",
    ["action"],
    registry=metrics.REGISTRY,
)
SENT = Counter(
    "vso_mail_sent",
    "E-mails the SMTP server accepted, by kind: reply, notice or notification.",
    ["kind"],
    registry=metrics.REGISTRY,
)
FAILURES = Counter(
    "vso_mail_failures",
    "Failed mailbox polls (fetch) and failed sends (send).",
    ["stage"],
    registry=metrics.REGISTRY,
)
UNSENT = Gauge(
    "vso_mail_outbox_unsent",
    "E-mails in the outbox that the SMTP server has not accepted yet.",
    registry=metrics.REGISTRY,
)

# Mail imported per poll; the rest follows at the next poll, without waiting.
FETCH_BATCH = 50
# Sending retries wait 5 s, then twice as long each time, up to an hour.
RETRY_MIN_SECONDS = 5.0
RETRY_MAX_SECONDS = 3600.0
# How often the sender looks for new replies when ``wake`` is not called.
SENDER_CHECK_SECONDS = 2.0


def retry_delay(attempts: int) -> float:
    """Return the seconds to wait after ``attempts`` failed sends."""
    return float(min(RETRY_MIN_SECONDS * 2 ** max(attempts - 1, 0), RETRY_MAX_SECONDS))


class MailService:
    """E-mail conversations for one relay process; ``start`` runs its tasks."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.mail = MailStore(store)
        self.address = settings.mail_address
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.mailbox = ImapMailbox(settings)
        # imaplib blocks, so every IMAP call runs on this one thread.
        self._imap_thread = ThreadPoolExecutor(1, thread_name_prefix="vso-imap")

    # Lifecycle

    def start(self) -> None:
        """Start the fetcher (with an IMAP host) and the sender (with SMTP)."""
        if self.settings.mail_imap_host:
            self._spawn(self._fetch_forever(), "mail-fetcher")
        if self.settings.mail_smtp_host:
            self._spawn(self._send_forever(), "mail-sender")
        self._spawn(self._purge_forever(), "mail-retention")
        logger.info(
            "mail started: fetching %s, sending %s",
            "on" if self.settings.mail_imap_host else "off",
            "on" if self.settings.mail_smtp_host else "off",
        )

    def _spawn(self, work: Any, name: str) -> None:
        task = asyncio.create_task(work, name=name)
        task.add_done_callback(self._log_end)
        self._tasks.append(task)

    @staticmethod
    def _log_end(task: asyncio.Task[None]) -> None:
        if not task.cancelled():
            logger.error("%s ended: %r", task.get_name(), task.exception())

    async def stop(self) -> None:
        """Cancel the tasks and wait for the IMAP thread to finish its call."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._imap_thread.shutdown(wait=True)
        logger.info("mail stopped")

    def wake(self) -> None:
        """Make the sender look for new replies now, not at its next check."""
        self._wake.set()

    async def _purge_forever(self) -> None:
        """Delete old import records and sent outbox rows, as often as the
        relay purges conversations."""
        days = self.settings.retention_days
        while True:
            try:
                imports, sent = await purge_mail_records(
                    self.store, utc_ago(days * 86400)
                )
                if imports or sent:
                    logger.info(
                        "purged %d mail import records and %d sent mails older"
                        " than %d days",
                        imports,
                        sent,
                        days,
                    )
            except StoreError as error:
                logger.error("purging mail records failed, retrying: %s", error)
            await asyncio.sleep(self.settings.purge_interval_seconds)

    # Inbound

    async def _fetch_forever(self) -> None:
        """Poll the mailbox until cancelled; failures are logged and retried."""
        interval = self.settings.mail_poll_seconds
        while True:
            try:
                more = await self.fetch_once()
            except (MailError, OSError, imaplib.IMAP4.error) as error:
                FAILURES.labels("fetch").inc()
                logger.error(
                    "fetching mail failed, retrying in %.0f s: %s", interval, error
                )
                more = False
            except StoreError as error:
                logger.error(
                    "importing mail failed, retrying in %.0f s: %s", interval, error
                )
                more = False
            except Exception:
                # A bug, not a server's failure: log it with its trace and keep
                # polling, so that one bad message does not stop the channel.
                FAILURES.labels("fetch").inc()
                logger.exception("fetching mail failed, retrying in %.0f s", interval)
                more = False
            if not more:
                await asyncio.sleep(interval)

    async def _imap(self, function: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._imap_thread, function, *args)

    async def fetch_once(self) -> bool:
        """Import the next batch of new mail; return True when more is waiting."""
        client: imaplib.IMAP4 = await self._imap(self.mailbox.connect)
        try:
            uidvalidity: int = await self._imap(self.mailbox.select, client)
            mailbox = self.settings.mail_imap_mailbox
            last = await self.mail.last_uid(mailbox, uidvalidity)
            if last:
                await self._flag_imported(client, mailbox, uidvalidity, last)
            uids: list[int] = await self._imap(self.mailbox.new_uids, client, last)
            for uid in uids[:FETCH_BATCH]:
                raw, size = await self._imap(self.mailbox.fetch, client, uid)
                outcome = await self.ingest(mailbox, uidvalidity, uid, raw, size)
                logger.info("mail uid %d of %s: %s", uid, mailbox, outcome)
                await self._imap(self.mailbox.flag_seen, client, [uid])
            return len(uids) > FETCH_BATCH
        finally:
            await self._imap(self.mailbox.logout, client)

    async def _flag_imported(
        self, client: imaplib.IMAP4, mailbox: str, uidvalidity: int, last: int
    ) -> None:
        """Flag seen the mail imported before a crash left it unseen."""
        unseen: list[int] = await self._imap(self.mailbox.unseen_up_to, client, last)
        imported = [
            uid
            for uid in unseen
            if await self.mail.was_imported(mailbox, uidvalidity, uid, None)
        ]
        if imported:
            logger.info("flagging %d imported mails seen", len(imported))
            await self._imap(self.mailbox.flag_seen, client, imported)

    async def ingest(
        self,
        mailbox: str,
        uidvalidity: int,
        uid: int,
        raw: bytes,
        size: int | None = None,
    ) -> str:
        """Import one fetched e-mail and return the outcome.

        A person's mail joins the conversation whose reply token it names and
        whose sender it comes from, or starts a new one. Bounces, auto-replies,
        list mail and mail without a sender are recorded but not imported, and
        get no automatic reply. A bounce that names a sent reply marks that
        reply undelivered. Mail with attachments, or over ``VSO_MAIL_MAX_BYTES``,
        gets one automatic reply that says what was not kept and why.
        """
        parsed = parse_mail(raw, self.settings.mail_max_bytes, size)
        message_id_hash = (
            hashlib.sha256(parsed.message_id.encode("utf-8")).hexdigest()
            if parsed.message_id
            else None
        )
        duplicate = await self.mail.was_imported(
            mailbox, uidvalidity, uid, message_id_hash
        )
        record = MailImport(
            mailbox=mailbox,
            uidvalidity=uidvalidity,
            uid=uid,
            message_id_hash=message_id_hash,
            outcome=DUPLICATE if duplicate else self._ignored(parsed) or IMPORTED,
        )
        if record.outcome == IMPORTED:
            await self._prepare(record, parsed)
        elif parsed.kind == BOUNCE and not duplicate:
            await self._match_bounce(record, raw, parsed)
        outcome, message = await self.mail.record_import(record)
        logger.info(
            "mail %s:%d %s%s (%s)",
            uidvalidity,
            uid,
            outcome,
            f" into {record.conversation_id}" if message else "",
            log_summary(parsed),
        )
        IMPORTS.labels(outcome.replace(" ", "_")).inc()
        if outcome == MATCHED_BOUNCE and record.bounce is not None:
            action = record.bounce.action or "unknown"
            BOUNCES.labels(action).inc()
            logger.info(
                "outbox mail %d of %s bounced: status %s, action %s",
                record.bounce.outbox_id,
                record.conversation_id,
                record.bounce.status or "none",
                action,
            )
        if record.outgoing:
            self.wake()
        return outcome

    async def _match_bounce(
        self, record: MailImport, raw: bytes, parsed: ParsedMail
    ) -> None:
        """Attach a bounce to the reply it names; without one, the bounce stays
        an ignored import."""
        report = read_bounce(raw, parsed.sender)
        if report is None:
            return
        reply = await self.mail.find_reply(report.message_ids)
        if reply is None:
            return
        record.outcome = MATCHED_BOUNCE
        record.conversation_id = reply.conversation_id
        record.bounce = Bounce(reply.outbox_id, report.status, report.action)

    def _ignored(self, parsed: ParsedMail) -> str | None:
        """Return why mail is not imported, or None for a person's mail."""
        if parsed.kind != PERSON:
            return f"ignored {parsed.kind}"
        if parsed.sender is None:
            return "ignored without sender"
        local, _, domain = self.address.partition("@")
        sender_local, _, sender_domain = parsed.sender.partition("@")
        if sender_domain == domain and (
            sender_local == local or sender_local.startswith(local + "+")
        ):
            return "ignored from the service itself"
        return None

    async def _prepare(self, record: MailImport, parsed: ParsedMail) -> None:
        """Fill in the conversation, message and notices of a person's mail."""
        if parsed.sender is None:
            raise ValueError("Mail without a sender is not imported.")
        secret = self.settings.secret_key
        own_hash = sender_hash(secret, parsed.sender)
        tokens = [token_hash(token) for token in tokens_in(parsed, self.address)]
        threads = await self.mail.threads_by_token(tokens)
        # A token names the thread only for its own correspondent: the same
        # token from another address starts a conversation of its own.
        matching = [cid for cid, hashed in threads.items() if hashed == own_hash]
        if matching:
            record.conversation_id = matching[0]
        else:
            record.conversation_id = secrets.token_urlsafe(12)
            record.new_thread = NewThread(
                site_id=await self._site_id(),
                token_hash=token_hash(reply_token(secret, record.conversation_id)),
                sender_hash=own_hash,
                sender=parsed.sender,
                sender_name=parsed.sender_name,
                subject=parsed.subject,
            )
        record.body = volunteer_text(parsed, self.settings.mail_max_bytes)
        record.client_id = f"mail-{record.uidvalidity}-{record.uid}"
        record.message_id = parsed.message_id
        notice = automatic_reply(parsed, self.settings.mail_max_bytes)
        if notice is not None:
            record.outgoing.append(
                self._outgoing(
                    "notice",
                    conversation_id=record.conversation_id,
                    recipient=parsed.sender,
                    subject=parsed.subject,
                    body=notice,
                    references=[*parsed.references, *_listed(parsed.message_id)],
                    automatic=True,
                )
            )

    def _outgoing(
        self,
        kind: str,
        *,
        conversation_id: str | None,
        recipient: str,
        subject: str,
        body: str,
        references: list[str],
        automatic: bool,
        seq: int | None = None,
    ) -> OutgoingMail:
        """Compose mail from the service; with a conversation, in its thread."""
        token = (
            reply_token(self.settings.secret_key, conversation_id)
            if conversation_id is not None
            else None
        )
        message_id = new_message_id(token, self.address)
        content = compose(
            service_address=self.address,
            service_name=self.settings.mail_name,
            token=token,
            recipient=recipient,
            subject=subject,
            body=body,
            message_id=message_id,
            references=references,
            automatic=automatic,
        )
        return OutgoingMail(kind, message_id, recipient, content, seq)

    async def _site_id(self) -> int:
        """Return the site e-mail conversations belong to; raises StoreError."""
        if self.settings.mail_site:
            site = await self.store.get_site_by_key(self.settings.mail_site)
            if site is None:
                raise StoreError(
                    f"VSO_MAIL_SITE={self.settings.mail_site!r} names no site;"
                    " see `vso site list`."
                )
            return site.id
        sites = await self.store.list_sites()
        if not sites:
            raise StoreError("No site exists for e-mail; add one with `vso site add`.")
        return min(site.id for site in sites)

    # Outbound

    async def _send_forever(self) -> None:
        """Queue new replies and send due outbox mail until cancelled."""
        while True:
            delay = SENDER_CHECK_SECONDS
            try:
                await self.queue_replies()
                await self.send_due()
                UNSENT.set((await self.mail.outbox_counts()).get("unsent", 0))
            except StoreError as error:
                logger.error("the mail outbox failed, retrying: %s", error)
            except Exception:
                FAILURES.labels("send").inc()
                logger.exception("the mail outbox failed, retrying")
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except TimeoutError:
                pass

    async def queue_replies(self) -> int:
        """Put volunteers' new replies in e-mail conversations in the outbox."""
        queued = 0
        for message in await self.mail.unqueued_replies():
            if await self._queue_reply(message):
                queued += 1
        return queued

    async def _queue_reply(self, message: Message) -> bool:
        cid = message.conversation_id
        thread = await self.mail.get_thread(cid)
        if thread is None:
            return False
        outgoing = self._outgoing(
            "reply",
            conversation_id=cid,
            recipient=thread.sender,
            subject=thread.subject,
            body=message.body,
            references=thread.message_ids,
            automatic=False,
            seq=message.seq,
        )
        queued = await self.mail.queue_outgoing(cid, outgoing)
        if queued:
            logger.info("reply %d of %s queued for sending", message.seq, cid)
        return queued

    async def reply_waiting(self, conversation_id: str) -> None:
        """Tell the visitor of a message conversation that a reply waits.

        The e-mail says only that a reply waits at ``/replies``: never the
        conversation's text or the reply code. Does nothing without an address.
        """
        address = await self.store.get_notify_address(conversation_id)
        if address is None:
            return
        body = reply_waiting_text(self.settings.public_url)
        outgoing = self._outgoing(
            "notification",
            conversation_id=None,
            recipient=address,
            subject=_("A reply is waiting for you"),
            body=body,
            references=[],
            automatic=True,
        )
        await self.mail.queue_outgoing(None, outgoing)
        logger.info("reply notice for %s queued", conversation_id)
        self.wake()

    async def send_due(self) -> int:
        """Send the outbox mail that is due; return how many were sent."""
        sent = 0
        for entry in await self.mail.due_outgoing(utc_now()):
            try:
                await send_mail(self.settings, entry.recipient, entry.content)
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
                attempts = entry.attempts + 1
                delay = retry_delay(attempts)
                reason = smtp_reason(error)
                logger.warning(
                    "sending outbox mail %d failed (attempt %d), retrying in %.0f s:"
                    " %s",
                    entry.id,
                    attempts,
                    delay,
                    reason,
                )
                await self.mail.mark_failed(entry.id, reason, utc_ago(-delay))
                FAILURES.labels("send").inc()
                continue
            await self.mail.mark_sent(entry.id)
            SENT.labels(entry.kind).inc()
            sent += 1
            logger.info("sent outbox mail %d (%s)", entry.id, entry.kind)
        return sent


def _listed(message_id: str | None) -> list[str]:
    return [message_id] if message_id else []
