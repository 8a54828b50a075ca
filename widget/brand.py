"""A partner site's colour as a stylesheet, so that the chat page can take it
without an inline style, which its Content-Security-Policy forbids.

NOTE: the floating launcher button keeps the standard colour, because the loader
fetches nothing from the relay until the visitor presses it.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from relay.services import get_services
from relay.site_form import darker
from relay.store import Site

SITE_KEY_MAX_CHARS = 64


def brand_css_url(site: Site) -> str:
    """Return the stylesheet URL of a site's colour, or "" when it has none.

    The colour is in the URL, so a changed colour is a new URL and no cache
    serves the old one.
    """
    if not site.brand_colour:
        return ""
    return f"/widget/site.css?site={site.key}&v={site.brand_colour.lstrip('#')}"


async def site_stylesheet(request: Request) -> Response:
    """Serve the custom properties that give the chat page its site's colour.

    The colour was checked as ``#rrggbb`` when saved; an unknown site or one
    without a colour gets an empty stylesheet, so the default colours stay.
    """
    key = request.query_params.get("site", "")
    site = None
    if key and len(key) <= SITE_KEY_MAX_CHARS:
        site = await get_services(request).store.get_site_by_key(key)
    body = ""
    if site is not None and site.brand_colour:
        colour = site.brand_colour
        body = (
            ":root {\n"
            f"  --accent: {colour};\n"
            f"  --accent-hover: {darker(colour)};\n"
            "  --accent-text: #ffffff;\n"
            f"  --focus: {colour};\n"
            "}\n"
        )
    return Response(
        body,
        media_type="text/css",
        headers={"cache-control": "public, max-age=300"},
    )
