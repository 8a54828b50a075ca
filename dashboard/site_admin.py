"""Admin pages for partner sites: the list, the settings form, the embed page
with both snippets and a live preview."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from dashboard.access import Staff, staff_form, staff_request
from dashboard.admin import not_found, path_id, render
from dashboard.common import templates
from relay.i18n import gettext as _
from relay.pages import content_security_policy, serving_origin
from relay.site_form import SiteFields, parse_site_form
from relay.sites import DEFAULT_EXIT_URL, embed_snippet, inline_snippet, new_site_key
from relay.store import Site

logger = logging.getLogger("dashboard.sites")


def _hours_url(site: Site) -> str:
    return f"/dashboard/sites/{site.id}/hours"


async def sites_page(request: Request) -> Response:
    checked = await staff_request(request, "admin")
    if isinstance(checked, Response):
        return checked
    sites = await checked.services.store.list_sites()
    return render(request, checked, "admin_sites.html", {"sites": sites})


def _form_page(
    request: Request,
    staff: Staff,
    fields: SiteFields,
    site: Site | None,
    status_code: int = 200,
) -> Response:
    return render(
        request,
        staff,
        "admin_site_form.html",
        {"fields": fields, "site": site, "hours_url": _hours_url(site) if site else ""},
        status_code,
    )


def _fields_of(site: Site) -> SiteFields:
    return SiteFields(
        name=site.name,
        origins_text="\n".join(site.origins),
        origins=list(site.origins),
        greeting=site.greeting,
        brand_colour=site.brand_colour,
        exit_url=site.exit_url,
    )


async def new_site_page(request: Request) -> Response:
    checked = await staff_request(request, "admin")
    if isinstance(checked, Response):
        return checked
    return _form_page(request, checked, SiteFields(exit_url=DEFAULT_EXIT_URL), None)


async def add_site(request: Request) -> Response:
    """Add a partner site from the form, or show the form again with its errors."""
    checked = await staff_form(request, "admin")
    if isinstance(checked, Response):
        return checked
    staff, form = checked
    fields = parse_site_form(form)
    if fields.errors:
        return _form_page(request, staff, fields, None, 400)
    site = await staff.services.store.add_site(
        new_site_key(), fields.name, fields.origins, fields.exit_url
    )
    return await _save_site(staff, site.id, fields, "site.add", "added")


async def _save_site(
    staff: Staff, site_id: int, fields: SiteFields, action: str, verb: str
) -> Response:
    """Store the form's settings, audit ``action`` and redirect to the embed page.

    ``verb`` is the past tense that the log line uses for the action.
    """
    store = staff.services.store
    await store.update_site(
        site_id,
        name=fields.name,
        origins=fields.origins,
        exit_url=fields.exit_url,
        greeting=fields.greeting,
        brand_colour=fields.brand_colour,
    )
    await store.record_audit(staff.volunteer.id, action, "site", site_id)
    logger.info("admin %d: %s site %d", staff.volunteer.id, verb, site_id)
    return RedirectResponse(f"/dashboard/admin/sites/{site_id}/embed", status_code=303)


async def _site_of(request: Request, staff: Staff) -> Site | Response:
    """Return the site that the ``{id}`` path parameter names, or the 404 page."""
    site_id = path_id(request)
    site = None if site_id is None else await staff.services.store.get_site(site_id)
    if site is None:
        return not_found(request, staff, _("This site does not exist."))
    return site


async def edit_site_page(request: Request) -> Response:
    checked = await staff_request(request, "admin")
    if isinstance(checked, Response):
        return checked
    site = await _site_of(request, checked)
    if isinstance(site, Response):
        return site
    return _form_page(request, checked, _fields_of(site), site)


async def update_site(request: Request) -> Response:
    """Change a site's settings, or show the form again with its errors."""
    checked = await staff_form(request, "admin")
    if isinstance(checked, Response):
        return checked
    staff, form = checked
    site = await _site_of(request, staff)
    if isinstance(site, Response):
        return site
    fields = parse_site_form(form)
    if fields.errors:
        return _form_page(request, staff, fields, site, 400)
    return await _save_site(staff, site.id, fields, "site.update", "updated")


def csp_entries(public_url: str) -> dict[str, str]:
    """Return what a partner page's own CSP must allow for the snippets.

    The loader script comes from the relay (script-src) and opens the chat page
    in an iframe (frame-src). The chat page's WebSocket runs inside that frame
    under the relay's own CSP, so the partner page needs no connect-src entry.
    """
    parts = urlsplit(public_url)
    origin = f"{parts.scheme}://{parts.netloc}"
    return {"script_src": origin, "frame_src": origin}


async def embed_page(request: Request) -> Response:
    """Show both snippets ready to copy, the CSP entries and a live preview."""
    checked = await staff_request(request, "admin")
    if isinstance(checked, Response):
        return checked
    site = await _site_of(request, checked)
    if isinstance(site, Response):
        return site
    public_url = checked.services.settings.public_url.rstrip("/")
    response = render(
        request,
        checked,
        "admin_site_embed.html",
        {
            "site": site,
            "embed_snippet": embed_snippet(public_url, site.key),
            "inline_snippet": inline_snippet(public_url, site.key),
            "csp": csp_entries(public_url),
            "preview_url": f"/dashboard/admin/sites/{site.id}/preview",
            "hours_url": _hours_url(site),
        },
    )
    response.headers["content-security-policy"] = content_security_policy(
        frame_src=["'self'"]
    )
    return response


async def preview_page(request: Request) -> Response:
    """Serve a plain page with the site's launcher snippet, for the embed
    page's preview frame. It uses the URL this page was served from, so the
    preview also works before ``VSO_PUBLIC_URL`` points at this server."""
    checked = await staff_request(request, "admin")
    if isinstance(checked, Response):
        return checked
    site = await _site_of(request, checked)
    if isinstance(site, Response):
        return site
    origin = serving_origin(request, checked.services.settings)
    context: dict[str, Any] = {
        "site": site,
        "chat_url": f"{origin}/chat?site={site.key}",
        "loader_url": f"{origin}/widget/loader.js",
    }
    return templates.TemplateResponse(
        request,
        "admin_site_preview.html",
        context,
        headers={
            "cache-control": "no-store",
            "content-security-policy": content_security_policy(
                frame_src=["'self'"], frame_ancestors=["'self'"]
            ),
        },
    )


routes: list[BaseRoute] = [
    Route("/dashboard/admin/sites", sites_page, methods=["GET"]),
    Route("/dashboard/admin/sites", add_site, methods=["POST"]),
    Route("/dashboard/admin/sites/new", new_site_page, methods=["GET"]),
    Route("/dashboard/admin/sites/{id}", edit_site_page, methods=["GET"]),
    Route("/dashboard/admin/sites/{id}", update_site, methods=["POST"]),
    Route("/dashboard/admin/sites/{id}/embed", embed_page, methods=["GET"]),
    Route("/dashboard/admin/sites/{id}/preview", preview_page, methods=["GET"]),
]
