"""Case notes after a conversation, and the admins' list of categories and referrals.

A conversation's note can be read and written by the volunteer who had the
conversation last, and by supervisors and admins. Everyone else gets the one
403 response of ``dashboard.access``, also for ids that do not exist, so the
response does not tell whether a conversation exists.
"""

from __future__ import annotations

import logging
import re

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from dashboard.access import Staff, forbidden, has_role, staff_form, staff_request
from dashboard.common import page_headers, templates
from relay.audit import audit
from relay.casestore import (
    LABEL_KINDS,
    MAX_LABEL_CHARS,
    MAX_NOTE_CHARS,
    CaseStore,
    Label,
    LabelError,
)
from relay.i18n import gettext as _
from relay.store import Conversation

logger = logging.getLogger("dashboard.casework")

CONVERSATION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
LABEL_ID = re.compile(r"[0-9]{1,9}")
# The note form has a CSRF token, a note and one field per chosen label, so it
# can be longer than ``dashboard.common.read_form``'s ten fields.
MAX_NOTE_FORM_FIELDS = 200
MAX_NOTE_FORM_BYTES = 128 * 1024
# The notes list shows at most this many chats waiting for notes, newest first.
WAITING_LIMIT = 200


def _context(staff: Staff, **values: object) -> dict[str, object]:
    return {
        "csrf_token": staff.csrf_token,
        "can_see_statistics": has_role(staff.volunteer, "supervisor"),
        "can_edit_labels": has_role(staff.volunteer, "admin"),
        "max_note_chars": MAX_NOTE_CHARS,
        "max_label_chars": MAX_LABEL_CHARS,
        **values,
    }


async def notes_list(request: Request) -> Response:
    """List closed chats waiting for notes, and recent ones that have them.

    Volunteers see their own chats; supervisors and admins see everyone's.
    """
    staff = await staff_request(request, "volunteer")
    if isinstance(staff, Response):
        return staff
    everyone = has_role(staff.volunteer, "supervisor")
    cases = CaseStore(staff.services.store)
    owner = None if everyone else staff.volunteer.id
    waiting = await cases.list_closed_conversations(
        owner, only_without_note=True, limit=WAITING_LIMIT
    )
    recent = [
        item
        for item in await cases.list_closed_conversations(
            owner, only_without_note=False, limit=50
        )
        if item.has_note
    ]
    sites = {site.id: site.name for site in await staff.services.store.list_sites()}
    names = (
        {v.id: v.display_name for v in await staff.services.store.list_volunteers()}
        if everyone
        else {}
    )
    return templates.TemplateResponse(
        request,
        "notes_list.html",
        _context(
            staff,
            waiting=waiting,
            recent=recent,
            sites=sites,
            names=names,
            everyone=everyone,
            waiting_limit=WAITING_LIMIT,
            saved=request.query_params.get("saved") == "1",
        ),
        headers=page_headers(request, staff.services),
    )


async def _allowed_conversation(
    staff: Staff, conversation_id: str
) -> Conversation | None:
    """Return the conversation if this staff member may see its note.

    Logs a refusal and returns None for an unknown conversation too.
    """
    conversation = (
        await staff.services.store.get_conversation(conversation_id)
        if CONVERSATION_ID.fullmatch(conversation_id)
        else None
    )
    if conversation is not None and (
        has_role(staff.volunteer, "supervisor")
        or conversation.volunteer_id == staff.volunteer.id
    ):
        return conversation
    logger.warning(
        "case note of %s forbidden for volunteer %d",
        conversation_id[:64],
        staff.volunteer.id,
    )
    return None


async def note_page(request: Request) -> Response:
    """Show a closed conversation's case note form."""
    staff = await staff_request(request, "volunteer")
    if isinstance(staff, Response):
        return staff
    conversation = await _allowed_conversation(
        staff, request.path_params["conversation"]
    )
    if conversation is None:
        return forbidden()
    note = await CaseStore(staff.services.store).get_case_note(conversation.id)
    return await _render_note(
        request, staff, conversation, note.note, note.label_ids, None, 200
    )


async def save_note(request: Request) -> Response:
    """Store a case note from its form; errors keep what was entered."""
    checked = await staff_form(request, "volunteer", MAX_NOTE_FORM_BYTES)
    if isinstance(checked, Response):
        return checked
    staff, _fields = checked

    conversation = await _allowed_conversation(
        staff, request.path_params["conversation"]
    )
    if conversation is None:
        return forbidden()

    # The labels are repeated fields, which staff_form's dict keeps one of;
    # Starlette parsed the body once and returns the same form here.
    form = await request.form(
        max_files=0,
        max_fields=MAX_NOTE_FORM_FIELDS,
        max_part_size=MAX_NOTE_FORM_BYTES,
    )
    note = str(form.get("note") or "").replace("\r\n", "\n").strip()
    raw_ids = [value for value in form.getlist("label") if isinstance(value, str)]

    cases = CaseStore(staff.services.store)
    chosen, error, status_code = await _check_choices(cases, conversation, raw_ids)
    if error is None:
        try:
            saved = await cases.save_case_note(
                conversation.id, staff.volunteer.id, note, chosen
            )
        except LabelError as label_error:
            error, status_code = str(label_error), 400
        else:
            if saved:
                await audit(
                    staff.services.store,
                    staff.volunteer.id,
                    "case_note.save",
                    "conversation",
                    conversation.id,
                )
                return RedirectResponse("/dashboard/notes?saved=1", status_code=303)
            error = _("This conversation was deleted, so the note was not saved.")
            status_code = 409
    logger.info(
        "case note of %s not saved for volunteer %d: status %d",
        conversation.id,
        staff.volunteer.id,
        status_code,
    )
    return await _render_note(
        request, staff, conversation, note, chosen, error, status_code
    )


async def _check_choices(
    cases: CaseStore, conversation: Conversation, raw_ids: list[str]
) -> tuple[frozenset[int], str | None, int]:
    """Return the chosen label ids, and an error and status when they cannot be saved.

    A retired label stays on a note that has it, but nobody can add it anew.
    """
    if not all(LABEL_ID.fullmatch(value) for value in raw_ids):
        return (
            frozenset(),
            _("The form named a label that does not exist. Choose again."),
            400,
        )
    chosen = frozenset(int(value) for value in raw_ids)
    if conversation.is_open:
        return (
            chosen,
            _("This conversation is still open. Write the note after it ends."),
            409,
        )
    current = await cases.get_case_note(conversation.id)
    labels = {label.id: label for label in await cases.list_labels()}
    invalid = frozenset(
        label_id
        for label_id in chosen
        if label_id not in labels
        or (labels[label_id].retired and label_id not in current.label_ids)
    )
    if invalid:
        return (
            chosen - invalid,
            _("A chosen label is retired or was removed. Check the choices again."),
            400,
        )
    return chosen, None, 200


async def _render_note(
    request: Request,
    staff: Staff,
    conversation: Conversation,
    note: str,
    chosen: frozenset[int],
    error: str | None,
    status_code: int,
) -> Response:
    labels = await CaseStore(staff.services.store).list_labels()
    site = await staff.services.store.get_site(conversation.site_id)
    volunteer = (
        await staff.services.store.get_volunteer(conversation.volunteer_id)
        if conversation.volunteer_id is not None
        else None
    )
    return templates.TemplateResponse(
        request,
        "note.html",
        _context(
            staff,
            conversation=conversation,
            site_name=site.name if site else "",
            volunteer_name=volunteer.display_name if volunteer else "",
            note=note,
            chosen=chosen,
            categories=_choices(labels, "category", chosen),
            referrals=_choices(labels, "referral", chosen),
            error=error,
        ),
        status_code=status_code,
        headers=page_headers(request, staff.services),
    )


def _choices(labels: list[Label], kind: str, chosen: frozenset[int]) -> list[Label]:
    """Return the labels a note form offers: active ones, and retired ones chosen."""
    return [
        label
        for label in labels
        if label.kind == kind and (not label.retired or label.id in chosen)
    ]


# Labels


async def labels_page(request: Request) -> Response:
    """List categories and referral targets with forms to change them."""
    staff = await staff_request(request, "admin")
    if isinstance(staff, Response):
        return staff
    return await _render_labels(request, staff, None, None, 200)


async def _render_labels(
    request: Request,
    staff: Staff,
    message: str | None,
    error: str | None,
    status_code: int,
) -> Response:
    labels = await CaseStore(staff.services.store).list_labels()
    return templates.TemplateResponse(
        request,
        "labels.html",
        _context(
            staff,
            categories=[label for label in labels if label.kind == "category"],
            referrals=[label for label in labels if label.kind == "referral"],
            message=message,
            error=error,
        ),
        status_code=status_code,
        headers=page_headers(request, staff.services),
    )


async def change_label(request: Request) -> Response:
    """Add, rename, retire or restore a label, as the form's ``action`` selects."""
    checked = await staff_form(request, "admin")
    if isinstance(checked, Response):
        return checked
    staff, form = checked
    cases = CaseStore(staff.services.store)
    action = form.get("action", "")
    label_id = int(form["label"]) if LABEL_ID.fullmatch(form.get("label", "")) else 0
    try:
        if action == "add":
            kind = form.get("kind", "")
            if kind not in LABEL_KINDS:
                raise LabelError(_("Choose category or referral."))
            label = await cases.add_label(kind, form.get("name", ""))
            await audit(
                staff.services.store, staff.volunteer.id, "label.add", "label", label.id
            )
            message = _("Added “%(name)s”.") % {"name": label.name}
        elif action == "rename":
            if not await cases.rename_label(label_id, form.get("name", "")):
                return await _render_labels(
                    request, staff, None, _("That label does not exist."), 404
                )
            await audit(
                staff.services.store,
                staff.volunteer.id,
                "label.rename",
                "label",
                label_id,
            )
            message = _("Renamed the label.")
        elif action in ("retire", "restore"):
            if not await cases.set_label_retired(label_id, action == "retire"):
                return await _render_labels(
                    request, staff, None, _("That label does not exist."), 404
                )
            await audit(
                staff.services.store,
                staff.volunteer.id,
                f"label.{action}",
                "label",
                label_id,
            )
            message = (
                _("Retired the label. Old notes and statistics keep it.")
                if action == "retire"
                else _("The label can be chosen again.")
            )
        else:
            return await _render_labels(
                request, staff, None, _("The form is incomplete. Try again."), 400
            )
    except LabelError as error:
        logger.info(
            "label %s by volunteer %d rejected: invalid name or kind",
            action[:16],
            staff.volunteer.id,
        )
        return await _render_labels(request, staff, None, str(error), 400)
    return await _render_labels(request, staff, message, None, 200)


routes: list[BaseRoute] = [
    Route("/dashboard/notes", notes_list, methods=["GET"]),
    Route("/dashboard/notes/{conversation:str}", note_page, methods=["GET"]),
    Route("/dashboard/notes/{conversation:str}", save_note, methods=["POST"]),
    Route("/dashboard/labels", labels_page, methods=["GET"]),
    Route("/dashboard/labels", change_label, methods=["POST"]),
]
