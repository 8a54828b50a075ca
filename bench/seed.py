"""Seed a relay database with N volunteers, each in one active conversation.

Pairs are made through the relay's own ``Store``, as if volunteers had accepted
visitors before a restart, so that the load generator opens only sockets and
never waits for the queue. Prints one JSON object per pair: the volunteer's
session cookie, the visitor's token and the conversation id.

Run: ``python bench/seed.py DATABASE SECRET_KEY N``.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
from pathlib import Path

from relay import auth
from relay.conversations import hash_token
from relay.settings import Settings
from relay.sites import DEFAULT_EXIT_URL
from relay.store import Store

ORIGIN = "http://127.0.0.1"


async def seed(database: Path, secret_key: str, count: int) -> list[dict[str, str]]:
    signer = auth.Signer(Settings(secret_key=secret_key))
    password_hash = auth.hash_password(secrets.token_urlsafe(16))
    store = await Store.open(database)
    pairs = []
    try:
        site = await store.add_site("bench", "Benchmark", [ORIGIN], DEFAULT_EXIT_URL)
        for index in range(count):
            volunteer = await store.add_volunteer(
                f"bench{index}", f"Volunteer {index}", password_hash, 1
            )
            session_id = auth.new_session_id()
            await store.create_session(session_id, volunteer.id)
            token = secrets.token_urlsafe(32)
            conversation = await store.create_conversation(
                secrets.token_urlsafe(12), site.id, hash_token(token)
            )
            await store.assign_conversation(conversation.id, volunteer.id)
            pairs.append(
                {
                    "cookie": signer.sign_session(session_id),
                    "token": token,
                    "conversation": conversation.id,
                }
            )
    finally:
        await store.close()
    return pairs


if __name__ == "__main__":
    result = asyncio.run(seed(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
    for pair in result:
        print(json.dumps(pair))
