"""The mark on a bounced reply, with a plain-language reason from its status.

An RFC 3463 status code's first digit is its class (4 temporary, 5 permanent);
5.1.x codes mean a bad address and 5.2.2 a full mailbox. The RFC 3464 action
states whether the sending server gave up ("failed") or still tries ("delayed").
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.i18n import gettext as _
from relay.mailbounce import DELAYED, FAILED
from relay.mailstore import Delivery


@dataclass(frozen=True)
class BounceMark:
    """The dashboard's mark on a reply that a bounce came back for."""

    title: str
    reason: str
    bounced_at: str


def bounce_mark(delivery: Delivery | None) -> BounceMark | None:
    """Return the mark for a reply's delivery, or None when nothing bounced."""
    if delivery is None or delivery.bounced_at is None:
        return None
    title = (
        _("Not delivered yet")
        if delivery.bounce_action == DELAYED
        else _("Not delivered")
    )
    reason = bounce_reason(delivery.bounce_status, delivery.bounce_action)
    return BounceMark(title, reason, delivery.bounced_at)


def bounce_reason(status: str | None, action: str | None) -> str:
    """Return why a reply was not delivered, in words a volunteer can act on."""
    if status is not None and status.startswith("5.1."):
        return _("The e-mail address does not exist.")
    if status == "5.2.2":
        return _("The recipient's mailbox is full.")
    temporary = status is not None and status.startswith("4.")
    if action == FAILED and temporary:
        return _("The mail servers gave up after a temporary problem lasted too long.")
    if action == DELAYED or temporary:
        return _(
            "A temporary problem delayed it. The mail servers keep trying, so it"
            " may still arrive."
        )
    if status is not None:
        return _("The receiving mail server refused it with status %(status)s.") % {
            "status": status
        }
    return _("The receiving mail server gave no reason.")
