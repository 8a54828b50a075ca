"""Threading of e-mail conversations, and the mail the relay writes.

Every e-mail conversation has a reply token: 26 base32 characters derived from
the conversation id with HMAC-SHA256 under ``VSO_SECRET_KEY``, so the database
keeps only its SHA-256. Outgoing mail carries the token twice: in Reply-To as
the plus-address ``help+TOKEN@domain`` and in its Message-ID as
``<TOKEN.RANDOM@domain>``. A reply to any mail of the thread names one of them,
in To or in In-Reply-To and References. Sender addresses are compared by an
HMAC under the same key. Changing ``VSO_SECRET_KEY`` therefore starts new
conversations for replies to older mail.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from relay.mailparse import ParsedMail, clean_header

TOKEN_CHARS = 26
_TOKEN = re.compile(rf"[a-z2-7]{{{TOKEN_CHARS}}}")
# Most clients show at most this many references; older ones add nothing.
MAX_REFERENCES = 20
# The same policy as ``policy.SMTP``, whose line ends SMTP needs, kept strict:
# header values with CR or LF raise instead of being folded.
SMTP_POLICY = policy.SMTP.clone(raise_on_defect=True)

AUTO_SUBMITTED = "auto-replied"
NOT_AUTO_SUBMITTED = "no"


def reply_token(secret_key: str, conversation_id: str) -> str:
    """Return the conversation's reply token, lower-case base32."""
    digest = hmac.new(
        secret_key.encode("utf-8"),
        b"mail-reply-token:" + conversation_id.encode("utf-8"),
        hashlib.sha256,
    ).digest()
    return base64.b32encode(digest).decode("ascii").lower()[:TOKEN_CHARS]


def token_hash(token: str) -> str:
    """Return the hex SHA-256 of a reply token, as stored."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def sender_hash(secret_key: str, address: str) -> str:
    """Return the keyed hash that compares sender addresses without storing them."""
    return hmac.new(
        secret_key.encode("utf-8"),
        b"mail-sender:" + address.lower().encode("utf-8"),
        hashlib.sha256,
    ).hexdigest()


def tokens_in(parsed: ParsedMail, service_address: str) -> list[str]:
    """Return the reply tokens that ``parsed`` names, in its recipients first.

    A token counts in a recipient ``LOCAL+TOKEN@DOMAIN`` of the service's
    address and in a referenced Message-ID ``TOKEN.RANDOM@DOMAIN`` of its domain.
    """
    local, _, domain = service_address.lower().partition("@")
    found: list[str] = []
    for recipient in parsed.recipients:
        name, _, recipient_domain = recipient.partition("@")
        tag = name.removeprefix(local + "+")
        if recipient_domain == domain and tag != name and _TOKEN.fullmatch(tag):
            found.append(tag)
    for reference in parsed.references:
        left, _, reference_domain = reference.lower().rpartition("@")
        candidate = left.partition(".")[0]
        if reference_domain == domain and _TOKEN.fullmatch(candidate):
            found.append(candidate)
    return list(dict.fromkeys(found))


def new_message_id(token: str | None, service_address: str) -> str:
    """Return a new Message-ID, with brackets, carrying the reply token if any."""
    domain = service_address.partition("@")[2]
    left = secrets.token_hex(16) if token is None else token
    return f"<{left}.{secrets.token_hex(8)}@{domain}>"


def reply_subject(subject: str) -> str:
    """Return the subject for a reply: ``Re:`` once, cleaned of line breaks."""
    cleaned = clean_header(subject)
    if not cleaned:
        return "Re: Your message"
    if cleaned.lower().startswith("re:"):
        return cleaned
    return "Re: " + cleaned


def compose(
    *,
    service_address: str,
    service_name: str,
    token: str | None,
    recipient: str,
    subject: str,
    body: str,
    message_id: str,
    references: list[str],
    automatic: bool,
    date: str | None = None,
) -> bytes:
    """Return an outgoing mail as bytes with CR LF line ends.

    It comes from the service's own address, sets Reply-To to the
    plus-address carrying ``token`` (unless it is None), and threads with
    In-Reply-To (the last of ``references``) and References (their last
    ``MAX_REFERENCES``, with brackets). ``automatic`` marks it
    Auto-Submitted, so that the receiver's auto-responder does not answer it.
    Raises ``ValueError`` for an invalid recipient.
    """
    local, _, domain = service_address.partition("@")
    message = EmailMessage(policy=SMTP_POLICY)
    message["From"] = Address(clean_header(service_name), addr_spec=service_address)
    message["To"] = Address(addr_spec=recipient)
    if token is not None:
        message["Reply-To"] = Address(
            clean_header(service_name), addr_spec=f"{local}+{token}@{domain}"
        )
    # Mail that answers nothing, such as a notice, keeps its subject as it is.
    message["Subject"] = reply_subject(subject) if references else clean_header(subject)
    message["Message-ID"] = message_id
    message["Date"] = date or format_datetime(datetime.now(UTC), usegmt=True)
    recent = [f"<{reference}>" for reference in references[-MAX_REFERENCES:]]
    if recent:
        message["In-Reply-To"] = recent[-1]
        message["References"] = " ".join(recent)
    message["Auto-Submitted"] = AUTO_SUBMITTED if automatic else NOT_AUTO_SUBMITTED
    if automatic:
        # Exchange and others then send no out-of-office reply to it.
        message["X-Auto-Response-Suppress"] = "All"
    message.set_content(body.replace("\r\n", "\n"), charset="utf-8")
    return message.as_bytes(policy=SMTP_POLICY)
