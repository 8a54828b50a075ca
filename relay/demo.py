"""The demo partner site and demo volunteer created on an empty database."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

from relay import auth
from relay.settings import Settings
from relay.sites import DEFAULT_EXIT_URL
from relay.store import Store

logger = logging.getLogger("relay.demo")

DEMO_SITE_KEY = "demo"
DEMO_USERNAME = "demo"
DEMO_DISPLAY_NAME = "Sam"


@dataclass(frozen=True)
class DemoAccount:
    username: str
    password: str


async def ensure_demo(store: Store, settings: Settings) -> DemoAccount | None:
    """Create the demo site and volunteer when the database has neither sites nor
    volunteers; return the new volunteer's sign-in, shown once, or None."""
    if await store.list_sites() or await store.list_volunteers():
        return None
    await store.add_site(
        DEMO_SITE_KEY,
        "Demo partner site",
        sorted(settings.own_origins),
        DEFAULT_EXIT_URL,
    )
    password = secrets.token_urlsafe(12)
    await store.add_volunteer(
        DEMO_USERNAME,
        DEMO_DISPLAY_NAME,
        auth.hash_password(password),
        settings.default_capacity,
    )
    logger.info("created the demo site and the demo volunteer")
    return DemoAccount(DEMO_USERNAME, password)
