"""The record of when each volunteer was available, for coverage statistics.

A volunteer counts as available while "Available" is switched on and at least
one dashboard socket is connected. A volunteer inside the reconnection grace
period does not count, as for visitors. Each change opens or closes an interval
in the store. A failed write is logged and skipped, so statistics can miss an
interval but a chat never fails because of one.
"""

from __future__ import annotations

import asyncio
import logging

from relay.casestore import CaseStore
from relay.store import StoreError

logger = logging.getLogger("relay.availability")


class AvailabilityLog:
    """Opens and closes volunteers' availability intervals as they change."""

    def __init__(self, cases: CaseStore) -> None:
        self._cases = cases
        self._available: set[int] = set()
        # Writes happen in the order of the calls, so the last call's state wins.
        self._lock = asyncio.Lock()

    async def restart(self) -> None:
        """Close the intervals left open when the relay stopped.

        They end at the restart. NOTE: after a crash this counts the time the
        relay was down as covered; a clean stop closes them through ``stop``.
        """
        try:
            closed = await self._cases.close_availability(None)
        except StoreError as error:
            logger.error("closing availability intervals at start failed: %s", error)
            return
        if closed:
            logger.info("closed %d availability intervals left open", closed)

    async def update(self, volunteer_id: int, available: bool) -> None:
        """Record that a volunteer is now available or not; repeats change nothing."""
        async with self._lock:
            await self._write(volunteer_id, available)

    async def _write(self, volunteer_id: int, available: bool) -> None:
        if available == (volunteer_id in self._available):
            return
        try:
            if available:
                await self._cases.open_availability(volunteer_id)
                self._available.add(volunteer_id)
            else:
                await self._cases.close_availability(volunteer_id)
                self._available.discard(volunteer_id)
        except StoreError as error:
            logger.error(
                "recording availability of volunteer %d failed: %s", volunteer_id, error
            )

    async def stop(self) -> None:
        """Close every open interval, at a clean stop of the relay."""
        for volunteer_id in sorted(self._available):
            await self.update(volunteer_id, False)
