"""Python's garbage collector, set up for a server with thousands of open sockets.

CPython 3.11 runs a full pass of its cycle collector whenever the objects that
survived earlier passes have grown by a quarter. A full pass walks every object
the collector tracks while the event loop waits, and each open socket adds many
such objects. In one benchmark trial at 1,000 pairs (``make bench``, two shared
cores), seven full passes ran, each stopping every conversation for 0.1 to
1.2 s. With the setup below the only full pass was the one at start-up.

Two changes make full passes shorter and rarer:

- What exists once the app is built (modules, templates, settings) lives as
  long as the process, so it is moved out of the collector's sight with
  ``gc.freeze()`` and no pass walks it again.
- A young pass runs after ``YOUNG_ALLOCATIONS`` allocations instead of 700.
  Most futures, tasks and dicts of a relayed message then die before a pass
  sees them, instead of surviving into the older generations, whose growth is
  what triggers full passes. The cost is garbage in cycles, at most that many
  container objects, waiting a little longer to be freed.

Reference counting still frees everything that is not in a cycle at once.
"""

from __future__ import annotations

import gc
import logging

logger = logging.getLogger("relay.collector")

YOUNG_ALLOCATIONS = 20_000


def tune() -> None:
    """Freeze what exists now and make young collections rarer. Call it once."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_ALLOCATIONS, middle, old)
    logger.debug(
        "froze %d objects; young collections every %d allocations",
        gc.get_freeze_count(),
        YOUNG_ALLOCATIONS,
    )
