"""The audit log's store API: what it records, what it rejects, paging."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relay.store import Store

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(tmp_path / "audit.sqlite3")
    try:
        yield opened
    finally:
        await opened.close()


async def test_record_audit_keeps_name_at_the_time(store: Store) -> None:
    admin = await store.add_volunteer("root", "Robin", "x", 2, "admin")
    entry = await store.record_audit(admin.id, "site.update", "site", 7)
    assert entry.actor_id == admin.id
    assert entry.actor_name == "Robin"
    assert entry.action == "site.update"
    assert entry.target_kind == "site"
    assert entry.target_id == "7"
    assert entry.created_at.endswith("Z")


@pytest.mark.parametrize(
    ("action", "kind", "target"),
    [
        ("Site Update", "site", 1),
        ("site.update", "site kind", 1),
        ("site.update", "site", "hello there, this is a message"),
        ("site.update", "site", "password=hunter2"),
        ("site.update", "site", ""),
        ("", "site", 1),
        ("site.update", "site", True),
    ],
)
async def test_record_audit_rejects_free_text(
    store: Store, action: str, kind: str, target: int | str
) -> None:
    admin = await store.add_volunteer("root", "Robin", "x", 2, "admin")
    with pytest.raises(ValueError):
        await store.record_audit(admin.id, action, kind, target)
    assert await store.list_audit() == []


async def test_record_audit_unknown_actor_rejected(store: Store) -> None:
    with pytest.raises(ValueError):
        await store.record_audit(404, "site.add", "site", 1)
    assert await store.list_audit() == []


async def test_list_audit_pages_and_filters(store: Store) -> None:
    admin = await store.add_volunteer("root", "Robin", "x", 2, "admin")
    for number in range(5):
        await store.record_audit(admin.id, "site.add", "site", number)
        await store.record_audit(admin.id, "account.deactivate", "volunteer", number)
    first = await store.list_audit(limit=4)
    assert [entry.id for entry in first] == [10, 9, 8, 7]
    second = await store.list_audit(before_id=first[-1].id, limit=4)
    assert [entry.id for entry in second] == [6, 5, 4, 3]
    sites = await store.list_audit(action="site.add")
    assert [entry.target_id for entry in sites] == ["4", "3", "2", "1", "0"]
    assert await store.audit_actions() == ["account.deactivate", "site.add"]
