"""Retention: closed conversations are hard-deleted after ``VSO_RETENTION_DAYS``.

The relay runs ``run_purges`` in the background; ``vso purge`` runs one purge by
hand. Deleted conversations stay only as numbers in the daily counts.
"""

from __future__ import annotations

import asyncio
import logging

from relay.store import Store, StoreError, utc_ago

logger = logging.getLogger("relay.retention")

# Waits after a failed purge, growing to the interval; a failure never stops the task.
RETRY_MIN_SECONDS = 5.0


async def purge_expired(store: Store, retention_days: int) -> int:
    """Delete conversations closed more than ``retention_days`` ago; return how many.

    Raises ``StoreError`` when the database fails; nothing is deleted then.
    """
    deleted = await store.purge_closed_before(utc_ago(retention_days * 86400))
    if deleted:
        logger.info(
            "purged %d conversations closed over %d days ago", deleted, retention_days
        )
    return deleted


async def run_purges(store: Store, retention_days: int, interval: float) -> None:
    """Purge at start and then every ``interval`` seconds until cancelled.

    A failed purge is logged and retried after a back-off that grows from
    ``RETRY_MIN_SECONDS`` up to ``interval``, so the task never ends by itself.
    """
    logger.info(
        "retention started: closed conversations are deleted after %d days",
        retention_days,
    )
    delay = RETRY_MIN_SECONDS
    while True:
        try:
            await purge_expired(store, retention_days)
        except Exception as error:
            # A StoreError explains itself; anything else is a bug, so with a trace.
            logger.error(
                "purge failed, retrying in %.0f s: %s",
                min(delay, interval),
                error,
                exc_info=not isinstance(error, StoreError),
            )
            await asyncio.sleep(min(delay, interval))
            delay = min(delay * 2, interval)
            continue
        delay = RETRY_MIN_SECONDS
        await asyncio.sleep(interval)
