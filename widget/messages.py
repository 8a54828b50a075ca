"""Visitor pages of the message channel: leave a message, and read replies by code.

Everything works without scripts. ``POST /message`` stores the message and
shows its reply code once. ``/replies`` takes the code in a POST body, never in
a URL, and every later form of the thread carries it in a hidden field of the
no-store page, so nothing about the conversation stays in the browser. Every
post passes a Fetch Metadata (or Origin) check and a CSRF token.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import Response

from relay import auth, hours, i18n
from relay.forms import honeypot_filled, read_form
from relay.i18n import gettext as _
from relay.inbox import InboxError
from relay.nojs import new_form_key
from relay.pages import serving_origin
from relay.ratelimit import HELP_SENTENCE, client_address
from relay.services import Services, get_services
from relay.store import InboxEntry, Message, Site
from widget import nojs
from widget.offline import carried_text, message_form_binding, message_form_context

logger = logging.getLogger("widget.messages")

# A message of 4,000 characters of four UTF-8 bytes each, percent-encoded, fits.
MAX_FORM_BYTES = 64 * 1024
SITE_KEY_MAX_CHARS = 64


def _error_texts() -> dict[str, str]:
    return {
        "empty_message": _("Please write a message before sending."),
        "invalid_address": _(
            "That e-mail address is not valid. Correct it, or leave the field empty."
        ),
        "invalid_form": _("The form was incomplete. Please try again."),
        "storage_failed": _(
            "The message could not be saved. Please send it again in a minute."
        ),
        "expired": _("The form expired. Please press the button again."),
        "cross_site": _("The form came from another website, so nothing was sent."),
        "not_found": _("No conversation has this code. Check the words and try again."),
        "rate_limited": _(
            "Too many wrong codes were entered. Please wait a few minutes and"
            " try again."
        ),
        "blocked": _("This reply code is blocked, so it cannot be used any more."),
    }


def _error_text(code: str, max_chars: int) -> str:
    if code == "message_too_long":
        return _(
            "That message is too long. Please shorten it to %(count)d characters"
            " or fewer."
        ) % {"count": max_chars}
    texts = _error_texts()
    return texts.get(code, texts["invalid_form"])


async def _site(request: Request, form: dict[str, str]) -> Site | None:
    """Return the request's site, switching to the visitor's language for it."""
    key = request.query_params.get("site") or form.get("site", "")
    site = None
    if key and len(key) <= SITE_KEY_MAX_CHARS:
        site = await get_services(request).store.get_site_by_key(key)
    nojs.use_visitor_language(request, site)
    return site


def _page_query(site: Site | None) -> str:
    """Return the query that keeps a page's site and the visitor's language."""
    if site is not None:
        return nojs.page_query(site)
    language = i18n.current_language()
    if language == i18n.DEFAULT_LANGUAGE:
        return ""
    return urlencode({i18n.LANGUAGE_PARAMETER: language})


def _render(
    request: Request,
    site: Site | None,
    name: str,
    context: dict[str, Any],
    status_code: int = 200,
) -> Response:
    services = get_services(request)
    origin = serving_origin(request, services.settings)
    ancestors = ["'self'", *site.origins] if site else []
    nojs.use_visitor_language(request, site)
    query = _page_query(site)
    return nojs._template_response(
        request,
        name,
        {
            "site_key": site.key if site else "",
            "site_name": site.name if site else "",
            "page_query": query,
            "chat_url": f"/chat?{query}" if site else None,
            "replies_url": f"/replies?{query}" if query else "/replies",
            **nojs._safety_context(site),
            **context,
        },
        status_code=status_code,
        headers=nojs.page_headers(origin, ancestors),
    )


def _same_origin(request: Request, services: Services) -> bool:
    return auth.same_origin_request(request.headers, services.settings.own_origins)


def _address_key(request: Request, services: Services) -> str:
    address = client_address(
        request.client.host if request.client else None,
        request.headers.get("x-forwarded-for"),
        services.settings.trusted_proxies,
    )
    return services.guard.address_key(address)


# Leave a message


def _message_page(
    request: Request,
    site: Site,
    *,
    draft: str = "",
    address: str = "",
    chat_token: str = "",
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    form = message_form_context(
        request,
        site,
        draft=draft,
        address=address,
        chat_token=chat_token,
        error=error,
    )
    return _render(request, site, "message.html", {"message_form": form}, status_code)


async def message_page(request: Request) -> Response:
    """GET /message: the "Leave a message" form on its own page."""
    site = await _site(request, {})
    if site is None:
        return _render(request, None, "not_found.html", _invalid_link(), 404)
    return _message_page(request, site)


def _invalid_link() -> dict[str, str]:
    return {"message": _("This link is not valid. Check the address.")}


async def leave_message(request: Request) -> Response:
    """POST /message: store a message once per form key and show its reply code.

    Any rejected post renders the form again with the visitor's text in it.
    """
    services = get_services(request)
    form = await read_form(request, MAX_FORM_BYTES)
    site = await _site(request, form)
    if site is None:
        return _render(request, None, "not_found.html", _invalid_link(), 400)
    max_chars = services.settings.max_message_chars
    if not form:
        logger.info("message rejected: form missing or over %d bytes", MAX_FORM_BYTES)
        return _message_page(
            request,
            site,
            error=_error_text("message_too_long", max_chars),
            status_code=413,
        )
    draft = form.get("body", "")
    address = form.get("notify_address", "")
    chat_token = form.get("chat_token", "")
    form_key = form.get("key", "")

    def again(code: str, status_code: int) -> Response:
        return _message_page(
            request,
            site,
            draft=draft,
            address=address,
            chat_token=chat_token,
            error=_error_text(code, max_chars),
            status_code=status_code,
        )

    if not _same_origin(request, services):
        logger.warning("message rejected: cross-site form post")
        return again("cross_site", 403)
    if not services.signer.check_csrf(
        form.get("csrf_token"), message_form_binding(site, form_key)
    ):
        logger.info("message rejected: missing or invalid CSRF token")
        return again("expired", 400)
    if honeypot_filled(form):
        logger.info("message rejected: honeypot field filled on site %d", site.id)
        return again("invalid_form", 400)
    try:
        left = await services.inbox.leave_message(site, form_key, draft, address)
    except InboxError as error:
        status = 503 if error.code == "storage_failed" else 400
        return again(error.code, status)
    await _end_waiting_chat(services, site, chat_token)
    response = _render(
        request,
        site,
        "message_sent.html",
        {"code_words": left.reply_code.split(), "has_address": bool(address.strip())},
    )
    if chat_token:
        response.delete_cookie(nojs.chat_cookie_name(services), path="/")
    return response


async def leave_instead(request: Request) -> Response:
    """POST /chat/nojs/leave: turn a waiting chat into a message form.

    The no-script chat page's "Leave a message instead" button posts the
    message form of the chat; the page that comes back has the visitor's
    messages and draft in the message form, tied to the chat it replaces.
    """
    form = await nojs._read_form(request)
    checked = await nojs._conversation_of_form(request, form)
    if isinstance(checked, Response):
        return checked
    site, conversation, token = checked
    draft = await carried_text(request, conversation.id, (form or {}).get("body", ""))
    return _message_page(request, site, draft=draft, chat_token=token)


async def _end_waiting_chat(services: Services, site: Site, token: str) -> None:
    """End the waiting chat that the message replaces, if it is still open."""
    if not token:
        return
    conversation = await services.nojs.find(token, site)
    if conversation is not None and services.chat.is_open(conversation.id):
        await services.nojs.end(conversation)
        logger.info("chat %s ended for a message", conversation.id)


# Replies


def _code_page(
    request: Request,
    site: Site | None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    services = get_services(request)
    form_key = new_form_key()
    return _render(
        request,
        site,
        "replies.html",
        {
            "form_key": form_key,
            "csrf_token": services.signer.csrf_token(f"replies:{form_key}"),
            "error": error,
        },
        status_code,
    )


async def replies_page(request: Request) -> Response:
    """GET /replies: the form for a reply code."""
    return _code_page(request, await _site(request, {}))


async def _thread_page(
    request: Request,
    entry: InboxEntry,
    code: str,
    *,
    notice: str | None = None,
    error: str | None = None,
    draft: str = "",
    status_code: int = 200,
) -> Response:
    services = get_services(request)
    site = await services.store.get_site(entry.site_id)
    schedule = await services.store.get_site_schedule(entry.site_id)
    zone = ZoneInfo(schedule.time_zone if schedule else hours.DEFAULT_TIME_ZONE)
    messages = await services.inbox.messages(entry.conversation_id)
    names = {}
    for message in messages:
        if message.volunteer_id is not None and message.volunteer_id not in names:
            names[message.volunteer_id] = await services.chat.display_name(
                message.volunteer_id
            )
    return _render(
        request,
        site,
        "replies_thread.html",
        {
            "entry": entry,
            "code": code,
            "items": [_thread_item(m, names, zone) for m in messages],
            "answered": any(m.sender == "volunteer" for m in messages),
            "form_key": new_form_key(),
            "csrf_token": services.signer.csrf_token(
                f"replies:{entry.conversation_id}"
            ),
            "notice": notice,
            "error": error,
            "draft": draft,
            "max_chars": services.settings.max_message_chars,
        },
        status_code,
    )


def _thread_item(
    message: Message, names: dict[int, str], zone: ZoneInfo
) -> dict[str, str]:
    if message.sender == "visitor":
        author = _("You")
    else:
        author = names.get(message.volunteer_id or 0) or _("Volunteer")
    sent = datetime.fromisoformat(message.created_at).astimezone(zone)
    return {
        "sender": message.sender,
        "author": author,
        "body": message.body,
        "sent_at": sent.strftime("%Y-%m-%d %H:%M"),
        "sent_at_iso": sent.isoformat(timespec="minutes"),
    }


async def _entry_of_form(
    request: Request, form: dict[str, str], binding: str | None
) -> tuple[InboxEntry, str] | Response:
    """Check a replies form and find the conversation of its code.

    ``binding`` is the CSRF binding of the code form; None means a thread
    form, whose token is bound to the conversation found.
    """
    services = get_services(request)
    site = await _site(request, form)
    if not _same_origin(request, services):
        logger.warning("replies form rejected: cross-site form post")
        return _code_page(request, site, _error_text("cross_site", 0), 403)
    if binding is not None and not services.signer.check_csrf(
        form.get("csrf_token"), binding
    ):
        logger.info("replies form rejected: missing or invalid CSRF token")
        return _code_page(request, site, _error_text("expired", 0), 400)
    code = form.get("code", "")
    try:
        entry = await services.inbox.find_by_code(_address_key(request, services), code)
    except InboxError as error:
        status = 429 if error.code == "rate_limited" else 404
        text = _error_text(error.code, 0)
        if error.code == "rate_limited":
            text = f"{text} {_(HELP_SENTENCE)}"
        return _code_page(request, site, text, status)
    if binding is None and not services.signer.check_csrf(
        form.get("csrf_token"), f"replies:{entry.conversation_id}"
    ):
        logger.info("replies form rejected: missing or invalid CSRF token")
        return await _thread_page(
            request,
            entry,
            code,
            error=_error_text("expired", 0),
            draft=form.get("body", ""),
            status_code=400,
        )
    return entry, code


async def open_replies(request: Request) -> Response:
    """POST /replies: show the conversation of a reply code."""
    form = await read_form(request)
    checked = await _entry_of_form(request, form, f"replies:{form.get('key', '')}")
    if isinstance(checked, Response):
        return checked
    entry, code = checked
    return await _thread_page(request, entry, code)


async def answer(request: Request) -> Response:
    """POST /replies/send: store the visitor's answer once per form key."""
    services = get_services(request)
    form = await read_form(request, MAX_FORM_BYTES)
    if not form:
        return _code_page(
            request,
            await _site(request, {}),
            _error_text("message_too_long", services.settings.max_message_chars),
            413,
        )
    checked = await _entry_of_form(request, form, None)
    if isinstance(checked, Response):
        return checked
    entry, code = checked
    body = form.get("body", "")
    try:
        await services.inbox.visitor_reply(entry, form.get("key", ""), body)
    except InboxError as error:
        status = {"storage_failed": 503, "blocked": 403, "not_found": 404}.get(
            error.code, 400
        )
        return await _thread_page(
            request,
            entry,
            code,
            error=_error_text(error.code, services.settings.max_message_chars),
            draft=body,
            status_code=status,
        )
    current = await services.store.get_inbox_entry(entry.conversation_id)
    return await _thread_page(
        request, current or entry, code, notice=_("Your message was sent.")
    )


async def delete(request: Request) -> Response:
    """POST /replies/delete: delete the whole conversation of a reply code."""
    services = get_services(request)
    form = await read_form(request)
    checked = await _entry_of_form(request, form, None)
    if isinstance(checked, Response):
        return checked
    entry, code = checked
    if form.get("confirm") != "yes":
        return await _thread_page(
            request,
            entry,
            code,
            error=_("Tick the box to confirm, then press Delete my messages again."),
            status_code=400,
        )
    await services.inbox.visitor_delete(entry)
    site = await services.store.get_site(entry.site_id)
    return _render(request, site, "replies_deleted.html", {})
