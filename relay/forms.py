"""Reading small HTML forms, and the honeypot field that catches form robots."""

from __future__ import annotations

from starlette.requests import Request

MAX_FORM_BYTES = 8 * 1024
# Staff forms carry a message of up to 4,000 characters, which URL encoding can
# make six bytes each, and the hours form a field per weekday.
STAFF_FORM_BYTES = 64 * 1024
MAX_FORM_FIELDS = 64
# An oversize body up to this size is read and dropped, so the browser gets the
# page that says the text is too long instead of a reset connection.
DRAIN_BYTES = 1024 * 1024
# A text field that people never see or fill in, because CSS moves it off screen,
# it is out of the tab order and screen readers skip it. Robots fill it in.
HONEYPOT_FIELD = "website"


async def read_form(
    request: Request, max_bytes: int = MAX_FORM_BYTES
) -> dict[str, str]:
    """Return the text fields of a urlencoded or multipart form.

    Returns an empty dict, keeping nothing of it, when the declared body is over
    ``max_bytes``; files and fields beyond ``MAX_FORM_FIELDS`` are rejected by
    the parser.
    """
    declared = int(request.headers.get("content-length") or 0)
    if declared > max_bytes:
        if declared <= DRAIN_BYTES:
            async for _chunk in request.stream():
                pass
        return {}
    form = await request.form(
        max_files=0, max_fields=MAX_FORM_FIELDS, max_part_size=max_bytes
    )
    return {key: value for key, value in form.items() if isinstance(value, str)}


def honeypot_filled(form: dict[str, str]) -> bool:
    """Return True when the hidden honeypot field has a value."""
    return bool(form.get(HONEYPOT_FIELD, "").strip())
