"""The text the relay writes about e-mail: notes for volunteers on what was not
kept, and the automatic replies and notices it sends."""

from __future__ import annotations

from relay.i18n import gettext as _
from relay.i18n import ngettext
from relay.mailparse import ParsedMail


def volunteer_text(parsed: ParsedMail, max_bytes: int) -> str:
    """Return the message text volunteers see, with notes on what was dropped."""
    notes = []
    if parsed.oversize:
        notes.append(
            _(
                "[This e-mail was %(size)d KB, over the limit of %(limit)d KB."
                " Its text was not kept and the sender was asked to write again.]"
            )
            % {
                "size": parsed.size // 1024,
                "limit": max_bytes // 1024,
            }
        )
    if parsed.attachments:
        notes.append(
            ngettext(
                "[%(count)d attachment was not kept; the sender was told why.]",
                "[%(count)d attachments were not kept; the sender was told why.]",
                parsed.attachments,
            )
            % {"count": parsed.attachments}
        )
    if not parsed.text and not notes:
        notes.append(_("[This e-mail contained no text.]"))
    return "\n\n".join([parsed.text, *notes] if parsed.text else notes)


def automatic_reply(parsed: ParsedMail, max_bytes: int) -> str | None:
    """Return the automatic reply for mail with attachments or over the limit."""
    if parsed.oversize:
        return _(
            "Thank you for writing to us.\n\n"
            "Your e-mail was too large for this service (%(size)d KB; the limit"
            " is %(limit)d KB), so we could not read it. Please send your"
            " message again as text, without attachments, in a reply to this"
            " e-mail.\n\nThis is an automatic reply."
        ) % {
            "size": parsed.size // 1024,
            "limit": max_bytes // 1024,
        }
    if parsed.attachments:
        return _(
            "Thank you for writing to us. We received your message, and a"
            " volunteer will answer it here.\n\n"
            "To protect your privacy, this service does not keep attachments,"
            " so no volunteer will see the files you sent. If something in them"
            " matters, please describe it in words in a reply to this e-mail.\n\n"
            "This is an automatic reply."
        )
    return None


def reply_waiting_text(public_url: str) -> str:
    """Return the notice that a reply waits: a fixed text, with no content."""
    return _(
        "Hello,\n\n"
        "A volunteer has replied to the message you left. To read the reply,"
        " open %(url)s/replies and enter your reply code.\n\n"
        "This e-mail does not contain the reply. Please do not answer it."
    ) % {"url": public_url}
