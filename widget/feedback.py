"""The post-chat question: did the visitor get the help they needed, and 1 to 5.

The form sends the conversation token, which proves the chat is the visitor's,
as ``/chat/delete`` does. Its field is ``chat_token``, because the chat forms on
the same page already use ``token``. The answers go into the conversation's
statistics row as two numbers and nothing else, and a second answer is rejected.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response

from relay import protocol
from relay.auth import same_origin_request
from relay.casestore import CaseStore
from relay.forms import read_form
from relay.i18n import gettext as _
from relay.services import get_services
from relay.store import Site
from widget import nojs

logger = logging.getLogger("widget.feedback")

HELPED_VALUES = {"yes": True, "no": False, "": None}
RATING_VALUES = {"": None, **{str(rating): rating for rating in range(1, 6)}}


async def feedback_form(request: Request) -> Response:
    """POST /chat/feedback?site=KEY: count the answers of an ended chat once."""
    services = get_services(request)
    key = request.query_params.get("site", "")
    site = (
        await services.store.get_site_by_key(key)
        if key and len(key) <= nojs.SITE_KEY_MAX_CHARS
        else None
    )
    if site is None:
        return Response(
            _("This chat link is not valid. Check the address."),
            status_code=404,
            media_type="text/plain",
            headers=nojs.NO_STORE,
        )
    nojs.use_visitor_language(request, site)
    if not same_origin_request(request.headers, services.settings.own_origins):
        logger.warning("post-chat answers rejected: cross-site form post")
        return await _ended_page(
            request,
            site,
            None,
            _("This form was sent from another site, so nothing was counted."),
            False,
            403,
        )

    form = await read_form(request)
    token = form.get("chat_token", "")
    conversation = (
        await services.nojs.find(token, site)
        if protocol.TOKEN_PATTERN.fullmatch(token)
        else None
    )
    if conversation is None:
        logger.info("post-chat answers rejected: unknown conversation token")
        return await _ended_page(
            request,
            site,
            None,
            _("This chat could not be found, so the answers were not counted."),
            False,
            404,
        )

    helped_text = form.get("helped", "")
    rating_text = form.get("rating", "")
    if helped_text not in HELPED_VALUES or rating_text not in RATING_VALUES:
        logger.info("post-chat answers for %s rejected: invalid", conversation.id)
        return await _ended_page(
            request,
            site,
            token,
            _("The form was incomplete. Please choose your answers again."),
            False,
            400,
        )
    helped = HELPED_VALUES[helped_text]
    rating = RATING_VALUES[rating_text]
    if helped is None and rating is None:
        logger.info("post-chat answers for %s rejected: empty", conversation.id)
        return await _ended_page(
            request,
            site,
            token,
            _("Choose an answer to at least one question."),
            False,
            400,
        )

    if conversation.is_open:
        logger.info("post-chat answers for %s rejected: still open", conversation.id)
        return await _ended_page(
            request,
            site,
            None,
            _("Please answer after the chat has ended."),
            False,
            409,
        )

    if not await CaseStore(services.store).record_feedback(
        conversation.id, helped, rating
    ):
        logger.info(
            "post-chat answers for %s rejected: answered before", conversation.id
        )
        return await _ended_page(
            request,
            site,
            token,
            _("Your answers were already counted. Thank you."),
            True,
            409,
        )
    logger.info("post-chat answers counted for conversation %s", conversation.id)
    return await _ended_page(request, site, token, None, True, 200)


async def _ended_page(
    request: Request,
    site: Site,
    token: str | None,
    error: str | None,
    done: bool,
    status_code: int,
) -> Response:
    """Render the chat page's ended state, with the form unless ``done``."""
    conversation = await get_services(request).nojs.find(token, site) if token else None
    return await nojs.render_chat(
        request,
        site,
        phase="ended",
        ended_reason=conversation.end_reason if conversation else None,
        delete_token=token if conversation else None,
        error=error,
        feedback_done=done,
        status_code=status_code,
    )
