"""Switching the chat to Maltese in real Chromium, with scripts and without, the
Maltese embed snippet on a partner page, the volunteer's dashboard showing
the visitor's language, and a Maltese message left while nobody is available."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from playwright.sync_api import Browser, FrameLocator, Page, expect

from tests.relayserver import RelayServer, free_port
from tests.test_end_to_end import sign_in

REPLY_SECONDS = 5.0


def available_volunteer_page(browser: Browser, relay: RelayServer) -> Page:
    page = browser.new_context().new_page()
    sign_in(page, relay)
    page.get_by_role("switch", name="Available").check()
    return page


def html_language(page: Page | FrameLocator) -> str | None:
    return page.locator("html").get_attribute("lang")


def pick_maltese(page: Page, relay: RelayServer) -> None:
    page.goto(f"{relay.base_url}/chat?site=demo")
    expect(page.get_by_role("button", name="Start chat")).to_be_visible()
    assert html_language(page) == "en"
    page.get_by_role("navigation", name="Language").get_by_role(
        "link", name="Malti"
    ).click()
    expect(page.get_by_role("button", name="Ibda chat")).to_be_visible()
    assert html_language(page) == "mt"
    assert page.locator("html").get_attribute("dir") == "ltr"
    expect(page.get_by_role("link", name="Ħruġ malajr")).to_be_visible()
    expect(
        page.get_by_text("Tista' tkellem voluntier imħarreġ.", exact=False)
    ).to_be_visible()


def test_maltese_chat_with_scripts(relay: RelayServer, browser: Browser) -> None:
    volunteer = available_volunteer_page(browser, relay)
    visitor = browser.new_context().new_page()

    pick_maltese(visitor, relay)
    visitor.get_by_role("button", name="Ibda chat").click()

    expect(visitor.get_by_text("Qed nistennew voluntier…")).to_be_visible()
    expect(visitor.get_by_text("Int numru 1 fil-kju.")).to_be_visible()
    queue = volunteer.locator(".queue-item")
    expect(queue.locator(".queue-language")).to_have_text("Maltese")

    volunteer.get_by_role("button", name="Accept").click()
    expect(visitor.get_by_role("heading", name="Qed tkellem lil Sam")).to_be_visible(
        timeout=REPLY_SECONDS * 1000
    )
    panel = volunteer.get_by_role("region", name="Chat with Visitor", exact=False)
    expect(panel.locator(".badge-language")).to_have_text("Maltese")

    visitor.get_by_role("textbox", name="Messaġġ").fill("Bonġu")
    visitor.get_by_role("button", name="Ibgħat").click()
    expect(panel.get_by_text("Bonġu")).to_be_visible()
    expect(visitor.locator(".message-visitor .message-author")).to_have_text("Int")

    visitor.get_by_role("button", name="Temm iċ-chat").click()
    expect(visitor.get_by_text("Int temmejt iċ-chat.")).to_be_visible()
    assert html_language(visitor) == "mt"


def test_maltese_chat_without_scripts(relay: RelayServer, browser: Browser) -> None:
    volunteer = available_volunteer_page(browser, relay)
    visitor = browser.new_context(java_script_enabled=False).new_page()

    pick_maltese(visitor, relay)
    visitor.get_by_role("button", name="Ibda chat").click()

    frame = visitor.frame_locator("iframe[title='Konversazzjoni']")
    expect(frame.get_by_text("Int numru 1 fil-kju.")).to_be_visible()
    expect(frame.get_by_text("Qed nistennew voluntier…", exact=False)).to_be_visible()
    assert html_language(visitor) == "mt"
    assert html_language(frame) == "mt"
    assert "lang=mt" in visitor.url
    conversation = visitor.locator("#nojs-conversation")
    expect(conversation.get_by_text("Sa 4000 karattru.")).to_be_visible()

    volunteer.get_by_role("button", name="Accept").click()
    expect(frame.get_by_role("heading", name="Qed tkellem lil Sam")).to_be_visible(
        timeout=REPLY_SECONDS * 1000
    )
    panel = volunteer.get_by_role("region", name="Chat with Visitor", exact=False)
    expect(panel.locator(".badge-language")).to_have_text("Maltese")

    visitor.get_by_role("textbox", name="Messaġġ").fill("Bonġu")
    visitor.get_by_role("button", name="Ibgħat").click()
    expect(frame.get_by_text("Bonġu")).to_be_visible(timeout=REPLY_SECONDS * 1000)
    assert html_language(visitor) == "mt"

    visitor.get_by_role("button", name="Temm iċ-chat").click()
    expect(visitor.get_by_text("Din iċ-chat intemmet.")).to_be_visible()
    expect(visitor.get_by_text("Int temmejt iċ-chat.")).to_be_visible()
    assert html_language(visitor) == "mt"


@pytest.mark.parametrize("scripts", [True, False], ids=["js", "nojs"])
def test_maltese_message_and_reply_code(
    relay: RelayServer, browser: Browser, scripts: bool
) -> None:
    visitor = browser.new_context(java_script_enabled=scripts).new_page()
    visitor.goto(f"{relay.base_url}/chat?site=demo")
    expect(visitor.get_by_role("heading", name="Leave a message")).to_be_visible()

    visitor.get_by_role("navigation", name="Language").get_by_role(
        "link", name="Malti"
    ).click()
    expect(visitor.get_by_role("heading", name="Ħalli messaġġ")).to_be_visible()
    assert html_language(visitor) == "mt"
    visitor.get_by_label("X'tixtieq tgħidilna?").fill("Xi ħadd qed isejħilni.")
    visitor.get_by_role("button", name="Ħalli dan il-messaġġ").click()

    expect(
        visitor.get_by_role("heading", name="Il-messaġġ tiegħek intbagħat")
    ).to_be_visible()
    assert html_language(visitor) == "mt"
    assert "lang=mt" in visitor.url
    code = visitor.locator("#reply-code").inner_text()
    assert len(code.split()) == 8
    visitor.get_by_role("link", name="Aqra t-tweġibiet").click()

    expect(
        visitor.get_by_role("heading", name="Aqra t-tweġibiet għall-messaġġ tiegħek")
    ).to_be_visible()
    assert html_language(visitor) == "mt"
    visitor.get_by_label("Il-kodiċi tat-tweġiba tiegħek (tmien kelmiet)").fill(code)
    visitor.get_by_role("button", name="Aqra t-tweġibiet").click()

    expect(visitor.get_by_role("heading", name="Il-messaġġi tiegħek")).to_be_visible()
    expect(visitor.get_by_text("Għad m'hemmx tweġiba.", exact=False)).to_be_visible()
    expect(visitor.get_by_text("Xi ħadd qed isejħilni.")).to_be_visible()
    assert html_language(visitor) == "mt"
    assert code.split()[0] not in visitor.url
    visitor.get_by_label("Wieġeb").fill("Grazzi.")
    visitor.get_by_role("button", name="Ibgħat it-tweġiba").click()
    expect(visitor.get_by_text("Il-messaġġ tiegħek intbagħat.")).to_be_visible()
    assert html_language(visitor) == "mt"


def test_switching_back_to_english(relay: RelayServer, browser: Browser) -> None:
    available_volunteer_page(browser, relay)
    visitor = browser.new_context(java_script_enabled=False).new_page()

    pick_maltese(visitor, relay)
    visitor.get_by_role("link", name="English").click()

    expect(visitor.get_by_role("button", name="Start chat")).to_be_visible()
    assert html_language(visitor) == "en"
    visitor.get_by_role("link", name="Browsing safely").click()
    expect(visitor.get_by_role("heading", name="Browsing safely")).to_be_visible()
    assert html_language(visitor) == "en"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def partner(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A partner website on another loopback origin, serving ``tmp_path``."""
    port = free_port()
    httpd = ThreadingHTTPServer(
        ("127.0.0.1", port), partial(_QuietHandler, directory=str(tmp_path))
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}", tmp_path
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_maltese_snippet_on_partner_page(
    relay: RelayServer, browser: Browser, partner: tuple[str, Path]
) -> None:
    available_volunteer_page(browser, relay)
    origin, directory = partner
    added = relay.cli("site", "add", "Sieħeb", "--origin", origin, "--language", "mt")
    assert added.returncode == 0, added.stderr
    snippet = re.search(r"<a [^\n]*</a>\n<script async [^\n]*</script>", added.stdout)
    assert snippet is not None, added.stdout
    (directory / "partner.html").write_text(
        '<!doctype html><html lang="mt"><meta charset="utf-8">'
        "<title>Sieħeb</title><h1>Sieħeb</h1>" + snippet.group(0),
        encoding="utf-8",
    )
    page = browser.new_context().new_page()

    page.goto(f"{origin}/partner.html")
    page.get_by_role("button", name="Kellimna").click()

    frame = page.frame_locator("iframe[title='Kellimna']")
    expect(frame.get_by_role("button", name="Ibda chat")).to_be_visible()
    assert html_language(frame) == "mt"
    expect(page.get_by_role("dialog", name="Kellimna")).to_be_visible()
    page.get_by_role("button", name="Agħlaq iċ-chat").click()
    expect(page.get_by_role("button", name="Kellimna")).to_be_visible()
