"""Python's garbage collector, set up for a server that holds thousands of sockets.

CPython's cycle collector runs a full pass whenever the objects that survived
earlier passes have grown by a quarter, and a full pass walks every object the
collector tracks while the event loop waits. With a few thousand open sockets
that is several hundred thousand objects: each full pass stopped every
conversation for 50 ms to a second on two busy cores, which is most of what
the relay's 99th-percentile latency was made of (see ``docs/benchmarks.md``).

Two changes make full passes shorter and rarer:

- What exists once the app is built (modules, templates, settings) lives as
  long as the process, so it is moved out of the collector's sight with
  ``gc.freeze()`` and no pass walks it again.
- A young pass runs after ``YOUNG_ALLOCATIONS`` allocations instead of 700.
  The frames, futures and dicts of one relayed message then die before any
  pass sees them, instead of surviving into the older generations, whose
  growth is what triggers full passes. The cost is at most that many
  container objects waiting a little longer to be freed.

Reference counting still frees everything that is not in a cycle at once.
"""

from __future__ import annotations

import gc
import logging

logger = logging.getLogger("relay.collector")

YOUNG_ALLOCATIONS = 20_000


def tune() -> None:
    """Freeze what exists now and make young collections rarer; call once."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_ALLOCATIONS, middle, old)
    logger.debug(
        "froze %d objects; young collections every %d allocations",
        gc.get_freeze_count(),
        YOUNG_ALLOCATIONS,
    )
