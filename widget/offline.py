"""The chat page's offline state and its "Leave a message" form.

Outside a site's opening hours, or while no volunteer is available, the chat
page offers the message form of ``_message_form.html`` in place of the chat.
This module builds that form's context for the chat page and the message
pages alike; ``widget/messages.py`` handles its post.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.requests import HTTPConnection

from relay import i18n
from relay.hours import describe_moment
from relay.inbox import Availability
from relay.nojs import new_form_key
from relay.services import get_services
from relay.store import Conversation, Site


def page_query(site: Site, **extra: str) -> str:
    """Return the query of a chat URL: the site, the language, then ``extra``.

    The language is left out when it is the site's default, so most URLs stay
    short.
    """
    query = {"site": site.key}
    language = i18n.current_language()
    if language != site.language:
        query[i18n.LANGUAGE_PARAMETER] = language
    return urlencode({**query, **extra})


def message_form_binding(site: Site, form_key: str) -> str:
    """Return what a message form's CSRF token is bound to."""
    return f"message:{site.key}:{form_key}"


def message_form_context(
    connection: HTTPConnection,
    site: Site,
    *,
    draft: str = "",
    address: str = "",
    chat_token: str = "",
    error: str | None = None,
) -> dict[str, Any]:
    """Return the fields of a new message form, with the visitor's text in it.

    ``chat_token`` is the waiting chat the message replaces, ended once the
    message is stored.
    """
    services = get_services(connection)
    form_key = new_form_key()
    return {
        "site_key": site.key,
        "query": page_query(site),
        "form_key": form_key,
        "csrf_token": services.signer.csrf_token(message_form_binding(site, form_key)),
        "draft": draft,
        "address": address,
        "chat_token": chat_token,
        "error": error,
        "max_chars": services.settings.max_message_chars,
    }


def availability_context(availability: Availability) -> dict[str, Any]:
    """Return what the chat page needs to say why the chat is offline."""
    opening = availability.next_opening
    return {
        "within_hours": availability.within_hours,
        "chat_open": availability.chat_open,
        "next_opening": describe_moment(opening) if opening else None,
    }


async def carried_text(
    connection: HTTPConnection, conversation_id: str, draft: str = ""
) -> str:
    """Return what a waiting visitor wrote: their messages, then the draft."""
    messages = await get_services(connection).store.messages_after(conversation_id, 0)
    parts = [m.body for m in messages if m.sender == "visitor"]
    if draft.strip():
        parts.append(draft.strip())
    return "\n\n".join(parts)


async def chat_page_context(
    connection: HTTPConnection,
    site: Site,
    *,
    phase: str,
    conversation: Conversation | None,
    token: str | None,
) -> dict[str, Any]:
    """Return the chat page's offline state and its message form.

    The form shows in place of the start button when the chat is offline, and
    beside a waiting conversation once nobody is available, filled with what
    the visitor wrote and tied to the chat it replaces.
    """
    services = get_services(connection)
    availability = await services.inbox.availability(site)
    queued = (
        phase == "conversation"
        and conversation is not None
        and services.chat.pairing.position(conversation.id) is not None
    )
    carry_over = queued and not availability.volunteers_available
    if carry_over and conversation is not None and token is not None:
        form = message_form_context(
            connection,
            site,
            draft=await carried_text(connection, conversation.id),
            chat_token=token,
        )
    else:
        form = message_form_context(connection, site)
    return {
        **availability_context(availability),
        "queued": queued,
        "show_offline": carry_over
        or (phase in ("welcome", "unavailable") and not availability.chat_open),
        "message_form": form,
        "replies_url": f"/replies?{page_query(site)}",
    }
