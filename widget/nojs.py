"""The chat page without scripts: rendering it, its forms and its transcript frame.

Forms post to ``/chat/nojs/start``, ``/send`` and ``/end``. In a first-party tab,
where the HttpOnly conversation cookie works, every post responds with a 303 to
``/chat?site=KEY`` (Post/Redirect/Get). Inside a cross-site iframe, where no
cookie comes back, the post renders the page itself, because the page needs the
conversation token for its next form and the token must not go into a URL. Each
form carries an idempotency key, so a resubmission changes nothing.
``docs/nojs.md`` explains the design and its limits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from starlette.requests import HTTPConnection, Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from relay import auth, i18n, protocol
from relay.conversations import EMERGENCY_NUMBER
from relay.i18n import N_
from relay.i18n import gettext as _
from relay.nojs import new_form_key
from relay.pages import content_security_policy, serving_origin
from relay.protocol import ProtocolError
from relay.services import Services, get_services
from relay.settings import ws_origin
from relay.store import Conversation, Site
from widget import offline
from widget.brand import brand_css_url
from widget.offline import page_query as page_query

logger = logging.getLogger("widget.nojs")

NO_STORE = {"cache-control": "no-store"}
# A message of 4,000 characters of four UTF-8 bytes each, percent-encoded, fits.
MAX_FORM_BYTES = 64 * 1024
SITE_KEY_MAX_CHARS = 64
TRANSCRIPT_REFRESH_SECONDS = 3

# Message ids, translated with _() when a page shows them.
ENDED_TEXTS = {
    "visitor": N_("You ended the chat."),
    "volunteer": N_("The volunteer ended the chat."),
    "abandoned": N_(
        "The chat was closed because the connection was lost for too long."
    ),
}
ERROR_TEXTS = {
    "empty_message": N_("Please write a message before sending."),
    "conversation_ended": N_("This chat has ended, so the message was not sent."),
    "storage_failed": N_("The message could not be saved. Please send it again."),
    "invalid_frame": N_("The form was incomplete. Please try again."),
}
GENERIC_ERROR_TEXT = N_("Something went wrong. Please try again.")
INVALID_LINK_TEXT = N_("This chat link is not valid. Check the address.")

_templates: Jinja2Templates | None = None


def _no_safety_context(site: Site | None) -> dict[str, str]:
    return {}


_safety_context: Callable[[Site | None], dict[str, str]] = _no_safety_context


def setup(
    templates: Jinja2Templates,
    safety_context: Callable[[Site | None], dict[str, str]],
) -> None:
    """Use the widget's templates and Quick exit context from ``widget.routes``."""
    global _templates, _safety_context
    _templates = templates
    _safety_context = safety_context


def _template_response(
    request: Request, name: str, context: dict[str, Any], **options: Any
) -> Response:
    if _templates is None:
        raise RuntimeError("widget.nojs.setup() was not called before a request.")
    return _templates.TemplateResponse(request, name, context, **options)


def use_visitor_language(request: HTTPConnection, site: Site | None) -> str:
    """Switch the request to the visitor's language and return it.

    The ``lang`` query parameter is the visitor's choice and wins; without it
    the site's default applies. ``LanguageMiddleware`` has already applied a
    valid ``lang``, so only the site's default is left to set here.
    """
    chosen = i18n.supported_language(request.query_params.get(i18n.LANGUAGE_PARAMETER))
    language = chosen or (site.language if site is not None else None)
    language = i18n.supported_language(language) or i18n.DEFAULT_LANGUAGE
    i18n.activate(language)
    return language


def chat_cookie_name(services: Services) -> str:
    return "__Host-vso_chat" if services.settings.secure else "vso_chat"


def page_headers(origin: str, frame_ancestors: list[str]) -> dict[str, str]:
    """Return the headers of a visitor page: no-store, and a CSP for its socket."""
    return {
        **NO_STORE,
        "content-security-policy": content_security_policy(
            connect=[ws_origin(origin)],
            frame_ancestors=frame_ancestors,
            frame_src=["'self'"],
        ),
    }


def _too_long_text(max_chars: int) -> str:
    return i18n.ngettext(
        "That message is too long. Please shorten it to %(num)d character.",
        "That message is too long. Please shorten it to %(num)d characters or fewer.",
        max_chars,
    ) % {"num": max_chars}


async def render_chat(
    request: Request,
    site: Site,
    *,
    phase: str,
    conversation: Conversation | None = None,
    token: str | None = None,
    error: str | None = None,
    draft: str = "",
    ended_reason: str | None = None,
    delete_token: str | None = None,
    feedback_done: bool = False,
    status_code: int = 200,
) -> Response:
    """Render the chat page in one phase: welcome, unavailable, ended, conversation.

    ``delete_token`` puts the plain "Delete this conversation" form on an ended page;
    the token then travels in the no-store page's form, never in a URL.
    """
    services = get_services(request)
    origin = serving_origin(request, services.settings)
    start_key = new_form_key()
    context: dict[str, Any] = {
        "site_name": site.name,
        "site_key": site.key,
        "greeting": site.greeting,
        "brand_css_url": brand_css_url(site),
        "ws_url": f"{ws_origin(origin)}/chat/ws?{page_query(site)}",
        "page_query": page_query(site),
        "languages": i18n.LANGUAGES,
        "language_urls": {
            code: "/chat?" + urlencode({"site": site.key, "lang": code})
            for code in i18n.LANGUAGES
        },
        "emergency_number": EMERGENCY_NUMBER,
        "phase": phase,
        "volunteers_available": services.chat.volunteers_available(),
        "start_key": start_key,
        "start_csrf": services.signer.csrf_token(f"start:{site.key}:{start_key}"),
        "session_csrf": services.signer.csrf_token(f"session:{site.key}"),
        "ended_reason": ended_reason if ended_reason in ENDED_TEXTS else None,
        "ended_text": _ended_text(ended_reason),
        "error": error,
        "resume_token": None,
        "delete_token": delete_token if phase == "ended" else None,
        "feedback_done": feedback_done,
        "max_chars": services.settings.max_message_chars,
        **_safety_context(site),
    }
    if phase == "conversation" and conversation is not None and token is not None:
        transcript = services.nojs.transcript_token(conversation.id)
        context.update(
            resume_token=token,
            conversation_token=token,
            conversation_csrf=services.signer.csrf_token(f"chat:{conversation.id}"),
            send_key=new_form_key(),
            transcript_url=_transcript_url(site, transcript),
            draft=draft,
        )
    context.update(
        await offline.chat_page_context(
            request, site, phase=phase, conversation=conversation, token=token
        )
    )
    response = _template_response(
        request,
        "chat.html",
        context,
        status_code=status_code,
        headers=page_headers(origin, ["'self'", *site.origins]),
    )
    return response


def _ended_text(reason: str | None) -> str:
    text = ENDED_TEXTS.get(reason or "")
    return _(text) if text else ""


async def chat_page(request: Request, site: Site) -> Response:
    """GET /chat: the conversation of the cookie, or the start page."""
    services = get_services(request)
    cookie_name = chat_cookie_name(services)
    token = request.cookies.get(cookie_name)
    conversation = await services.nojs.find(token, site) if token else None
    if conversation is not None and conversation.is_open:
        return await render_chat(
            request, site, phase="conversation", conversation=conversation, token=token
        )
    reason = request.query_params.get("ended")
    if conversation is not None and reason in ENDED_TEXTS:
        # Right after the end the cookie still proves the right to delete.
        return await render_chat(
            request,
            site,
            phase="ended",
            ended_reason=conversation.end_reason,
            delete_token=token,
        )
    if conversation is not None:
        # Any later visit starts afresh and shows nothing of the old chat, in
        # case someone else uses the browser now.
        response = await render_chat(request, site, phase="welcome")
        response.delete_cookie(cookie_name, path="/")
        return response
    if reason in ENDED_TEXTS:
        return await render_chat(request, site, phase="ended", ended_reason=reason)
    return await render_chat(request, site, phase="welcome")


# Posts


async def _read_form(request: Request) -> dict[str, str] | None:
    """Return the form's text fields, or None when the body is too large."""
    if int(request.headers.get("content-length") or 0) > MAX_FORM_BYTES:
        return None
    form = await request.form(max_files=0, max_fields=10, max_part_size=MAX_FORM_BYTES)
    return {key: value for key, value in form.items() if isinstance(value, str)}


async def _site_of(request: Request, form: dict[str, str]) -> Site | None:
    # The forms' actions carry the (public) site key in the query too, so that
    # even a post whose body is too large to read gets a proper page.
    key = request.query_params.get("site") or form.get("site", "")
    site = None
    if key and len(key) <= SITE_KEY_MAX_CHARS:
        site = await get_services(request).store.get_site_by_key(key)
    use_visitor_language(request, site)
    return site


def _problem(request: Request, message: str, status_code: int) -> Response:
    """Render an error page for a post that names no known partner site."""
    return _template_response(
        request,
        "not_found.html",
        {
            "message": message,
            "emergency_number": EMERGENCY_NUMBER,
            **_safety_context(None),
        },
        status_code=status_code,
        headers=NO_STORE,
    )


def _transcript_url(site: Site, token: str) -> str:
    return "/chat/nojs/transcript?" + page_query(site, t=token)


def _chat_url(site: Site, **extra: str) -> str:
    return "/chat?" + page_query(site, **extra)


def _top_level(request: Request) -> bool:
    """Return True for a post from a top-level tab, where the cookie works.

    Inside any iframe (``Sec-Fetch-Dest: iframe``) a cookie may be blocked or
    partitioned, and without Fetch Metadata the context is unknown, so both get
    the page rendered with the token in its forms instead of a redirect.
    """
    return request.headers.get("sec-fetch-dest") == "document"


def _cross_site(request: Request) -> bool:
    services = get_services(request)
    return not auth.same_origin_request(request.headers, services.settings.own_origins)


async def start(request: Request) -> Response:
    """POST /chat/nojs/start: open a conversation once per form key."""
    services = get_services(request)
    form = await _read_form(request)
    site = await _site_of(request, form or {})
    if form is None or site is None:
        return _problem(request, _(INVALID_LINK_TEXT), 400)
    key = form.get("key", "")
    if (
        not valid_client_key(key)
        or _cross_site(request)
        or not services.signer.check_csrf(
            form.get("csrf_token"), f"start:{site.key}:{key}"
        )
    ):
        logger.info("no-script start rejected: bad CSRF token or cross-site post")
        return await render_chat(
            request,
            site,
            phase="welcome",
            error=_("The form expired. Please press Start chat again."),
            status_code=400,
        )
    if not await services.inbox.within_hours(site):
        return await render_chat(request, site, phase="unavailable")
    started = await services.nojs.start(site, key, i18n.current_language())
    if started is None:
        return await render_chat(request, site, phase="unavailable")
    conversation, token = started.conversation, started.token
    if not conversation.is_open:
        return await render_chat(
            request, site, phase="ended", ended_reason=conversation.end_reason
        )
    if _top_level(request):
        response: Response = RedirectResponse(_chat_url(site), status_code=303)
    else:
        response = await render_chat(
            request, site, phase="conversation", conversation=conversation, token=token
        )
    _set_chat_cookie(services, response, token)
    return response


def _set_chat_cookie(services: Services, response: Response, token: str) -> None:
    # A session cookie (no Max-Age): it goes when the browser closes, and ending
    # the chat revokes its token anyway.
    response.set_cookie(
        chat_cookie_name(services),
        token,
        path="/",
        secure=services.signer.secure,
        httponly=True,
        samesite="lax",
    )


async def _conversation_of_form(
    request: Request, form: dict[str, str] | None
) -> tuple[Site, Conversation, str] | Response:
    """Check a send or end form; return its site, conversation and token.

    Anything wrong gives a page that explains it, and nothing is stored.
    """
    services = get_services(request)
    site = await _site_of(request, form or {})
    if site is None:
        return _problem(request, _(INVALID_LINK_TEXT), 400)
    if form is None:
        return await _page_of_cookie(
            request, site, _too_long_text(services.settings.max_message_chars), 413
        )
    token = form.get("token", "")
    conversation = await services.nojs.find(token, site)
    if conversation is None:
        logger.info("no-script post rejected: missing or unknown conversation token")
        return await _page_of_cookie(
            request,
            site,
            _(
                "This chat could not be found. It may have ended; you can start a"
                " new one."
            ),
            403,
        )
    if _cross_site(request) or not services.signer.check_csrf(
        form.get("csrf_token"), f"chat:{conversation.id}"
    ):
        logger.info("no-script post rejected: bad CSRF token or cross-site post")
        if not conversation.is_open:
            return await _page_of_cookie(request, site, None, 400)
        return await render_chat(
            request,
            site,
            phase="conversation",
            conversation=conversation,
            token=token,
            error=_("The form expired or came from another page. Please try again."),
            draft=form.get("body", ""),
            status_code=400,
        )
    if not conversation.is_open:
        return await _page_of_cookie(
            request, site, _("This chat has ended, so nothing was sent."), 409
        )
    return site, conversation, token


async def _page_of_cookie(
    request: Request, site: Site, error: str | None, status_code: int
) -> Response:
    """Render what GET /chat would show, with an error message on it."""
    services = get_services(request)
    token = request.cookies.get(chat_cookie_name(services))
    conversation = await services.nojs.find(token, site) if token else None
    if conversation is not None and conversation.is_open and token:
        return await render_chat(
            request,
            site,
            phase="conversation",
            conversation=conversation,
            token=token,
            error=error,
            status_code=status_code,
        )
    return await render_chat(
        request, site, phase="welcome", error=error, status_code=status_code
    )


def _after_post(
    request: Request, site: Site, token: str, **query: str
) -> Response | None:
    """Return the 303 of Post/Redirect/Get if the cookie contains this conversation.

    Returns None where the cookie does not work, and the post renders the page.
    """
    services = get_services(request)
    if request.cookies.get(chat_cookie_name(services)) == token:
        return RedirectResponse(_chat_url(site, **query), status_code=303)
    return None


async def send(request: Request) -> Response:
    """POST /chat/nojs/send: store a message once per form key."""
    services = get_services(request)
    form = await _read_form(request)
    checked = await _conversation_of_form(request, form)
    if isinstance(checked, Response):
        return checked
    site, conversation, token = checked
    # The check above returned a page if the form could not be read.
    fields = form or {}
    body = fields.get("body", "")
    try:
        await services.nojs.send(conversation, fields.get("key", ""), body)
    except ProtocolError as error:
        if error.code == "conversation_ended":
            current = await services.store.get_conversation(conversation.id)
            return await render_chat(
                request,
                site,
                phase="ended",
                ended_reason=current.end_reason if current else None,
                error=_(ERROR_TEXTS["conversation_ended"]),
                status_code=409,
            )
        text = (
            _too_long_text(services.settings.max_message_chars)
            if error.code == "message_too_long"
            else _(ERROR_TEXTS.get(error.code, GENERIC_ERROR_TEXT))
        )
        return await render_chat(
            request,
            site,
            phase="conversation",
            conversation=conversation,
            token=token,
            error=text,
            draft=body,
            status_code=503 if error.code == "storage_failed" else 400,
        )
    redirect = _after_post(request, site, token)
    if redirect is not None:
        return redirect
    return await render_chat(
        request, site, phase="conversation", conversation=conversation, token=token
    )


async def end(request: Request) -> Response:
    """POST /chat/nojs/end: end the conversation and revoke its tokens."""
    services = get_services(request)
    form = await _read_form(request)
    checked = await _conversation_of_form(request, form)
    if isinstance(checked, Response):
        return checked
    site, conversation, token = checked
    await services.nojs.end(conversation)
    return _after_post(request, site, token, ended="visitor") or (
        await render_chat(
            request, site, phase="ended", ended_reason="visitor", delete_token=token
        )
    )


async def transcript(request: Request) -> Response:
    """GET /chat/nojs/transcript?t=TOKEN: the reloading transcript frame.

    The token is signed, read-only and lives a few minutes; each render links
    the next reload to a fresh one. Each load counts as the visitor's presence.
    An ended conversation shows nothing but that it ended.
    """
    services = get_services(request)
    site = await _site_of(request, {})
    # The frame sits in the chat page, which may sit in the partner's page; the
    # CSP's frame-ancestors applies to every ancestor, so both are allowed.
    ancestors = ["'self'", *(site.origins if site else ())]
    headers = {
        **NO_STORE,
        "content-security-policy": content_security_policy(frame_ancestors=ancestors),
    }
    context: dict[str, Any] = {
        "state": "gone",
        "message": _("This view has expired. Reload the page to see the conversation."),
        "time_zone": services.settings.time_zone,
        "messages": [],
        "refresh_url": None,
        "refresh_seconds": TRANSCRIPT_REFRESH_SECONDS,
        "position": None,
        "volunteer_name": None,
        "ended_text": "",
        "new_chat_url": None,
        "volunteers_available": services.chat.volunteers_available(),
        "emergency_number": EMERGENCY_NUMBER,
    }
    conversation_id = services.nojs.transcript_conversation(
        request.query_params.get("t")
    )
    view = await services.nojs.view(conversation_id) if conversation_id else None
    if view is not None and (site is None or view.conversation.site_id != site.id):
        view = None
    if view is not None and not view.conversation.is_open:
        reason = view.conversation.end_reason or ""
        context.update(
            state="ended",
            ended_text=_ended_text(reason),
            new_chat_url=_chat_url(site, ended=reason) if site else None,
        )
    elif view is not None:
        await services.nojs.seen(view.conversation)
        token = services.nojs.transcript_token(view.conversation.id)
        if view.position is not None:
            state = "requeued" if view.requeued else "waiting"
        else:
            state = "chatting"
        context.update(
            state=state,
            position=view.position,
            volunteer_name=view.volunteer_name,
            messages=view.messages,
            refresh_url=_transcript_url(site, token) if site else None,
        )
    status_code = 200 if view is not None else 404
    return _template_response(
        request, "transcript.html", context, status_code=status_code, headers=headers
    )


async def remember(request: Request) -> Response:
    """POST /chat/session: chat.js hands over its token for the HttpOnly cookie.

    Then a reload with scripts switched off finds the conversation. Without a
    working cookie (a cross-site iframe) this changes nothing.
    """
    services = get_services(request)
    form = await _read_form(request) or {}
    site = await _site_of(request, form)
    if site is None or _cross_site(request):
        return Response(status_code=400)
    if not services.signer.check_csrf(form.get("csrf_token"), f"session:{site.key}"):
        return Response(status_code=400)
    token = form.get("token", "")
    conversation = await services.nojs.find(token, site)
    if conversation is None or not conversation.is_open:
        return Response(status_code=404, headers=NO_STORE)
    response = Response(status_code=204, headers=NO_STORE)
    _set_chat_cookie(services, response, token)
    return response


def valid_client_key(key: str) -> bool:
    return bool(protocol.CLIENT_ID_PATTERN.fullmatch(key))
