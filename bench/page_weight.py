"""Page weight of the visitor's chat page, with and without scripts.

Starts a relay on a free loopback port with a temporary database, walks through a
chat without scripts (start page, conversation page, transcript frame) and
fetches what each page loads. Prints a table and writes
``bench/results/page_weight.json`` with raw and gzip-compressed bytes.

Run it with ``make bench`` or ``.venv/bin/python bench/page_weight.py``.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import sys
import tempfile
from html import unescape
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.relayserver import RelayServer, available_volunteer  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "page_weight.json"


def weigh(content: bytes) -> dict[str, int]:
    return {"bytes": len(content), "gzip_bytes": len(gzip.compress(content, 9))}


# Module imports and @import rules, which make a script or style sheet load more.
NESTED_IMPORT = re.compile(
    r"""(?:\bimport\b[^;]*?\bfrom\s*|@import\s+url\()["']([^"']+)["']"""
)


def nested_imports(body: bytes) -> list[str]:
    """Return the absolute paths a script or style sheet imports.

    Relative imports are not followed: the pages' scripts import by absolute path.
    """
    found = NESTED_IMPORT.findall(body.decode("utf-8", "replace"))
    return [url for url in found if url.startswith("/")]


def subresources(page: str) -> dict[str, list[str]]:
    """Return the stylesheets, scripts and frames a page loads."""
    return {
        "style": re.findall(r'<link rel="stylesheet" href="([^"]+)"', page),
        "script": re.findall(r'<script[^>]* src="([^"]+)"', page),
        "frame": [
            unescape(src) for src in re.findall(r'<iframe[^>]* src="([^"]+)"', page)
        ],
    }


async def measure(relay: RelayServer) -> dict[str, Any]:
    assert relay.demo_password is not None
    cookie = await relay.sign_in("demo", relay.demo_password)
    volunteer = await available_volunteer(relay, cookie)
    pages: dict[str, Any] = {}
    # A top-level tab: the relay keeps the chat in its cookie and redirects.
    tab = {"sec-fetch-dest": "document"}
    async with httpx.AsyncClient(
        base_url=relay.base_url, timeout=10, headers=tab
    ) as client:

        async def fetch(path: str) -> bytes:
            response = await client.get(path)
            response.raise_for_status()
            return response.content

        async def page_with_parts(name: str, path: str, content: bytes) -> None:
            text = content.decode()
            parts = subresources(text)
            entry: dict[str, Any] = {"path": path.split("?")[0], "html": weigh(content)}
            without_scripts = len(content)
            without_scripts_gzip = entry["html"]["gzip_bytes"]
            for kind in ("style", "script"):
                pending = list(parts[kind])
                while pending:
                    url = pending.pop(0)
                    key = f"{kind}:{url.split('?')[0]}"
                    if key in entry:
                        continue
                    body = await fetch(url)
                    pending.extend(nested_imports(body))
                    entry[key] = weight = weigh(body)
                    if kind == "style":
                        without_scripts += weight["bytes"]
                        without_scripts_gzip += weight["gzip_bytes"]
            for url in parts["frame"]:
                frame = await fetch(url)
                weight = weigh(frame)
                entry[f"frame:{url.split('?')[0]}"] = weight
                without_scripts += weight["bytes"]
                without_scripts_gzip += weight["gzip_bytes"]
            entry["total_without_scripts"] = {
                "bytes": without_scripts,
                "gzip_bytes": without_scripts_gzip,
            }
            pages[name] = entry

        start_path = "/chat?site=demo"
        start = await fetch(start_path)
        await page_with_parts("start page", start_path, start)

        fields = dict(
            re.findall(
                r'<input type="hidden" name="(\w+)" value="([^"]*)"',
                start.decode().split('id="start-form"')[1].split("</form>")[0],
            )
        )
        started = await client.post("/chat/nojs/start?site=demo", data=fields)
        if started.status_code != 303:
            raise RuntimeError(f"starting a chat failed with {started.status_code}")
        conversation = await fetch(start_path)
        await page_with_parts("conversation page", start_path, conversation)

        frame_src = subresources(conversation.decode())["frame"][0]
        queue = await volunteer.expect_where(
            lambda frame: frame["type"] == "queue" and bool(frame["entries"])
        )
        conversation_id = queue["entries"][0]["conversation"]
        await volunteer.send({"type": "accept", "conversation": conversation_id})
        await volunteer.expect("assigned")
        for index in range(20):
            await volunteer.send(
                {
                    "type": "send",
                    "conversation": conversation_id,
                    "client_id": f"b-{index}",
                    "body": "A reply of about eighty characters, as a volunteer "
                    "might write it in a chat.",
                }
            )
            await volunteer.expect("ack", client_id=f"b-{index}")
        frame = await fetch(frame_src)
        pages["transcript frame, 20 messages"] = {
            "path": frame_src.split("?")[0],
            "html": weigh(frame),
            "note": "reloaded every 3 seconds while the chat runs",
        }
        await volunteer.close()
    return pages


def report(pages: dict[str, Any]) -> None:
    print(f"{'page':<32} {'part':<36} {'bytes':>8} {'gzip':>8}")
    for name, entry in pages.items():
        for part, weight in entry.items():
            if isinstance(weight, dict):
                print(
                    f"{name:<32} {part:<36} {weight['bytes']:>8}"
                    f" {weight['gzip_bytes']:>8}"
                )


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        relay = RelayServer(Path(directory))
        relay.start()
        try:
            pages = asyncio.run(measure(relay))
        finally:
            relay.stop()
    report(pages)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"page_weight": pages}, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
