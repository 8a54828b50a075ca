"""Notices that a reply waits, which never contain the conversation's text.

``InboxService`` calls ``reply_waiting`` after a volunteer replies to a
message conversation whose visitor left an address. The implementation looks
the address up with ``Store.get_notify_address`` and must never send the
conversation's text. The default only logs the conversation id, so a relay
without outgoing mail loses nothing but the notice.
"""

from __future__ import annotations

import logging
from typing import Protocol

logger = logging.getLogger("relay.notify")


class ReplyNotifier(Protocol):
    async def reply_waiting(self, conversation_id: str) -> None:
        """Tell the visitor of ``conversation_id`` that a reply waits.

        Raising is allowed; the caller logs the failure and the reply stays
        stored.
        """


class LogOnlyNotifier:
    """A notifier that sends nothing and logs the conversation id."""

    async def reply_waiting(self, conversation_id: str) -> None:
        logger.info("reply waiting in %s; no notifier is configured", conversation_id)
