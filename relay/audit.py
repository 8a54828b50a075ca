"""Entries in the audit log for actions whose own result must not depend on it."""

from __future__ import annotations

import logging

from relay.store import Store, StoreError

logger = logging.getLogger("relay.audit")


async def audit(
    store: Store, actor_id: int, action: str, target_kind: str, target_id: str | int
) -> None:
    """Append an audit entry; log, never raise, when the entry cannot be written.

    The action it records has already happened, so a failed entry is reported
    to the operator instead of being shown to the staff member as a failure.
    """
    try:
        await store.record_audit(actor_id, action, target_kind, target_id)
    except (StoreError, ValueError) as error:
        logger.error(
            "audit entry %s on %s %s by volunteer %d not recorded: %s",
            action,
            target_kind,
            target_id,
            actor_id,
            error,
        )
