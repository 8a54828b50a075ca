"""Debian's Chromium driven by Playwright, for end-to-end tests."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, sync_playwright

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    """Return the Chromium binary: ``CHROMIUM_PATH`` if set, else Debian's."""
    path = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium")
    if path is None:
        pytest.fail(
            "Chromium is not installed; `make test` installs Debian's chromium."
        )
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Launch Chromium for one test module.

    Playwright's sync API keeps an event loop running while it is open, so it
    must stop before modules whose tests run their own loop.
    """
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield instance
        finally:
            instance.close()
