"""Tests of ``relay.collector.tune``, each in a child process with its own collector."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import gc, json
from relay import collector
before = gc.get_threshold()
collector.tune()
print(json.dumps({"before": before, "after": gc.get_threshold(),
                  "frozen": gc.get_freeze_count()}))
"""


def test_tune_freezes_and_raises_threshold() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    state = json.loads(result.stdout)

    assert state["frozen"] > 1000
    assert state["after"][0] == 20_000
    assert state["after"][1:] == state["before"][1:]
