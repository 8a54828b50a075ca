"""Read bounces of the service's own mail: which mail failed, and the status.

``read_bounce`` returns the Message-IDs that a bounce names as the failed mail
and the RFC 3463 status code and RFC 3464 action of the failure. It returns
nothing else. The Diagnostic-Code text and every address in a bounce name the
recipient's mailbox, so they are skipped and never returned.

The failed mail's Message-ID comes from the first of these that has one:

1. the returned message of the bounce: a ``message/rfc822`` part with the
   whole mail, or a ``text/rfc822-headers`` part with its header block;
2. a ``Message-ID:`` header quoted in the bounce's text, where servers that
   return no separate part copy the original headers;
3. the bounce's own In-Reply-To and the last ID in its References, which some
   servers set to the failed mail's Message-ID.

The returned message's own In-Reply-To and References never count, because
they name the mail it replies to, not the mail that failed.
"""

from __future__ import annotations

import email
import email.policy
import logging
import re
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser, HeaderParser

from relay.mailparse import _decode, _first_id, _header, html_to_text

logger = logging.getLogger("relay.mailbounce")

FAILED = "failed"
DELAYED = "delayed"
# RFC 3464 actions that report a success: such a notification is no bounce.
_SUCCESS_ACTIONS = frozenset({"delivered", "relayed", "expanded"})
_DAEMON_SENDERS = ("mailer-daemon", "postmaster")
# Parts that carry the returned mail: whole (message/*) or its headers only
# (text/rfc822-headers). The global variants are RFC 6533's, for SMTPUTF8 mail.
_RETURNED_MAIL = frozenset({"message/rfc822", "message/global"})
_RETURNED_HEADERS = frozenset({"text/rfc822-headers", "message/global-headers"})
_STATUS_REPORTS = frozenset(
    {"message/delivery-status", "message/global-delivery-status"}
)
_MAX_DEPTH = 10

# An RFC 3463 enhanced status code: class, subject and detail.
_STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")
# An enhanced status code in a bounce's text, after an SMTP reply code of the
# same kind ("550 5.1.1", "452-4.2.2") or after "Status:".
_TEXT_STATUS = re.compile(
    r"(?:(?<![\w.])[45]\d\d[ -]|\bstatus:[ \t]*)([45]\.\d{1,3}\.\d{1,3})(?![\w.])",
    re.IGNORECASE,
)
# A quoted Message-ID header, but not Original-Message-ID or Resent-Message-ID.
_QUOTED_MESSAGE_ID = re.compile(
    r"(?<![\w-])message-id:[ \t]*<([^<>\s]{1,250})>", re.IGNORECASE
)


@dataclass(frozen=True)
class BounceReport:
    """The failed mail's candidate Message-IDs and its failure, from a bounce.

    ``message_ids`` are its candidate Message-IDs, without angle brackets,
    most reliable first. ``status`` is an RFC 3463 code such as "5.1.1", and
    ``action`` is "failed" or "delayed". Either is None when the bounce gives
    no valid value for it.
    """

    message_ids: tuple[str, ...]
    status: str | None
    action: str | None


def read_bounce(raw: bytes, sender: str | None) -> BounceReport | None:
    """Read the failed mail's Message-IDs, status and action from a bounce.

    ``sender`` is the bounce's From address as ``parse_mail`` returns it. A
    mail counts as a bounce only when it is an RFC 3464 delivery status
    report or comes from a mailer-daemon or postmaster address, so that an
    auto-reply sent with an empty Return-Path is never taken for one. Returns
    None for a report of successful delivery, for read receipts and other
    reports, and when the mail names no Message-ID. Never raises.
    """
    try:
        message = email.message_from_bytes(raw, policy=email.policy.compat32)
        return _read(message, sender)
    except Exception as error:  # a damaged bounce is one that names no mail
        logger.warning("bounce of %d bytes could not be read: %r", len(raw), error)
        return None


def _read(message: Message, sender: str | None) -> BounceReport | None:
    report = _report(message, depth=0)
    report_type = ""
    if report is not None:
        report_type = str(report.get_param("report-type") or "").lower()
        if report_type not in ("", "delivery-status"):
            # Read receipts, abuse reports and other reports are no bounce.
            return None
    from_daemon = (sender or "").partition("@")[0] in _DAEMON_SENDERS
    if report_type != "delivery-status" and not from_daemon:
        return None

    parts = _parts(message, depth=0)
    status, action = None, None
    blocks = [
        block
        for part in parts
        if part.get_content_type() in _STATUS_REPORTS
        for block in _status_blocks(part)
    ]
    if blocks:
        chosen = _failed_block(blocks)
        if chosen is None:
            return None
        status, action = chosen

    returned = _returned_message_id(parts)
    text = _text(parts)
    quoted = _QUOTED_MESSAGE_ID.search(text)
    if status is None and action is None:
        # Without a status report, the code comes from the text before the
        # quoted original, because the original's own text may follow it.
        found = _TEXT_STATUS.search(text[: quoted.start()] if quoted else text)
        status = found.group(1) if found else None

    if returned is not None:
        ids: tuple[str, ...] = (returned,)
    elif quoted is not None:
        ids = (quoted.group(1),)
    else:
        ids = _own_references(message)
    if not ids:
        return None
    return BounceReport(message_ids=ids, status=status, action=action)


def _report(message: Message, depth: int) -> Message | None:
    """Return the first multipart/report part, outside any returned mail."""
    if message.get_content_type() == "multipart/report":
        return message
    if depth >= _MAX_DEPTH or message.get_content_maintype() != "multipart":
        return None
    payload = message.get_payload()
    if not isinstance(payload, list):
        return None
    for part in payload:
        if isinstance(part, Message):
            found = _report(part, depth + 1)
            if found is not None:
                return found
    return None


def _parts(message: Message, depth: int) -> list[Message]:
    """Return the leaf parts, with message/* parts whole: never what is inside
    the returned mail."""
    if depth >= _MAX_DEPTH:
        return []
    if message.get_content_maintype() != "multipart":
        return [message]
    payload = message.get_payload()
    if not isinstance(payload, list):
        return []
    parts: list[Message] = []
    for part in payload:
        if isinstance(part, Message):
            parts.extend(_parts(part, depth + 1))
    return parts


def _status_blocks(part: Message) -> list[Message]:
    """Return the field blocks of a delivery status part: the per-message
    block first, then one per recipient."""
    payload = part.get_payload()
    if isinstance(payload, list):
        # The email package splits message/delivery-status into its blocks.
        return [block for block in payload if isinstance(block, Message)]
    text = _decode(part)
    return [
        HeaderParser(policy=email.policy.compat32).parsestr(block.strip() + "\n")
        for block in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n"))
        if block.strip()
    ]


def _failed_block(blocks: list[Message]) -> tuple[str | None, str | None] | None:
    """Return the status and action of the first recipient that failed.

    A recipient whose Action is missing or unknown counts after those that
    failed or were delayed. Returns None when every recipient was delivered.
    """
    unknown: tuple[str | None, str | None] | None = None
    for block in blocks:
        action_text = _header(block, "action").strip().lower()
        if not action_text and not _header(block, "status").strip():
            continue  # the per-message block, or an empty one
        action = action_text.split(" ", 1)[0]
        # A Status field may carry a comment after its code: "5.1.1 (bad mailbox)".
        code = (_header(block, "status").split() or [""])[0]
        status = code if _STATUS.fullmatch(code) else None
        if action in (FAILED, DELAYED):
            return status, action
        if action not in _SUCCESS_ACTIONS and unknown is None:
            unknown = (status, None)
    return unknown


def _returned_message_id(parts: list[Message]) -> str | None:
    """Return the Message-ID of the first returned mail or header block."""
    for part in parts:
        content_type = part.get_content_type()
        headers: Message | None = None
        if content_type in _RETURNED_MAIL:
            payload = part.get_payload()
            if isinstance(payload, list) and payload:
                headers = payload[0] if isinstance(payload[0], Message) else None
            elif isinstance(payload, str):
                headers = _header_block(payload.encode("utf-8", "surrogateescape"))
        elif content_type in _RETURNED_HEADERS:
            content = part.get_payload(decode=True)
            if isinstance(content, bytes):
                headers = _header_block(content)
        if headers is not None:
            return _first_id(_header(headers, "message-id"))
    return None


def _header_block(content: bytes) -> Message:
    return BytesHeaderParser(policy=email.policy.compat32).parsebytes(content)


def _text(parts: list[Message]) -> str:
    """Return the bounce's own text parts, HTML converted to text."""
    texts: list[str] = []
    for part in parts:
        if part.get_content_maintype() != "text":
            continue
        subtype = part.get_content_subtype()
        if subtype == "plain":
            texts.append(_decode(part))
        elif subtype == "html":
            texts.append(html_to_text(_decode(part)))
    return "\n".join(texts)


def _own_references(message: Message) -> tuple[str, ...]:
    """Return the bounce's In-Reply-To and the last ID of its References."""
    ids: list[str] = []
    in_reply_to = _first_id(_header(message, "in-reply-to"))
    if in_reply_to is not None:
        ids.append(in_reply_to)
    references = re.findall(r"<([^<>\s]{1,250})>", _header(message, "references"))
    if references and references[-1] not in ids:
        ids.append(references[-1])
    return tuple(ids)
