"""The information hub: pages on victims' rights, reporting and staying safe,
and the directory of support services, all readable without scripts."""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import quote

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from relay.conversations import EMERGENCY_NUMBER
from relay.i18n import gettext as _
from relay.pages import serving_origin
from relay.resources import LANGUAGES, info_path
from relay.services import get_services
from relay.store import Site
from widget import nojs
from widget.routes import (
    SITE_KEY_MAX_CHARS,
    _not_found,
    _safety_context,
    _site_from_query,
    templates,
)

logger = logging.getLogger("widget.info")

LANGUAGE_NAMES = {"en": "English", "mt": "Malti"}
_INFO_LINK = re.compile(r'href="(/info[^"]*)"')


def _with_site(path: str, site: Site | None) -> str:
    """Return a hub path that keeps the partner site, for its Quick exit."""
    if site is None:
        return path
    separator = "&" if "?" in path else "?"
    return f"{path}{separator}site={quote(site.key, safe='')}"


def _links_with_site(html: Markup, site: Site | None) -> Markup:
    """Add the site to the hub links of a rendered page."""
    if site is None:
        return html

    def replace(match: re.Match[str]) -> str:
        # The rendered path is HTML-escaped (&amp;), so the site goes in escaped.
        path = match.group(1)
        separator = "&amp;" if "?" in path else "?"
        return f'href="{path}{separator}site={quote(site.key, safe="")}"'

    return Markup(_INFO_LINK.sub(replace, str(html)))  # noqa: S704


def waiting_links(request: Request, language: str) -> list[dict[str, str]]:
    """Return the hub pages to offer a visitor waiting in the queue.

    The links keep the request's ``site`` so the pages' Quick exit goes to the
    partner's neutral page; chat.html and transcript.html call this.
    """
    content = get_services(request).content
    if language not in LANGUAGES:
        language = LANGUAGES[0]
    key = request.query_params.get("site", "")
    links = []
    for page in content.pages_in(language):
        if not page.while_waiting:
            continue
        path = info_path(page.slug, language)
        if key and len(key) <= SITE_KEY_MAX_CHARS:
            path += f"&site={quote(key, safe='')}"
        links.append({"title": page.title, "url": path})
    return links


templates.env.globals["hub_waiting_links"] = waiting_links


async def _render(
    request: Request, template: str, language: str, site: Site | None, **extra: Any
) -> Response:
    services = get_services(request)
    content = services.content
    current = request.url.path
    navigation = [
        {
            "title": page.title,
            "url": _with_site(info_path(page.slug, language), site),
            "current": current == f"/info/{page.slug}",
        }
        for page in content.pages_in(language)
    ]
    navigation.append(
        {
            "title": content.directory_title[language],
            "url": _with_site(info_path("services", language), site),
            "current": current == "/info/services",
        }
    )
    alternates = [
        {
            "language": other,
            "name": LANGUAGE_NAMES[other],
            "url": _with_site(f"{current}?lang={other}", site),
        }
        for other in LANGUAGES
        if other != language
    ]
    return templates.TemplateResponse(
        request,
        template,
        {
            "lang": language,
            "navigation": navigation,
            "alternates": alternates,
            "index_url": _with_site(f"/info?lang={language}", site),
            "chat_url": f"/chat?site={quote(site.key, safe='')}" if site else None,
            "emergency_number": EMERGENCY_NUMBER,
            **_safety_context(site),
            **extra,
        },
        headers=nojs.page_headers(
            serving_origin(request, services.settings),
            ["'self'", *site.origins] if site else [],
        ),
    )


def _language(request: Request) -> str | None:
    language = request.query_params.get("lang", "en")
    if language in LANGUAGES:
        return language
    logger.info("hub page requested in an unknown language")
    return None


def _page_not_found(request: Request) -> Response:
    return _not_found(request, _("This page does not exist. Check the address."))


async def index(request: Request) -> Response:
    """Serve the hub's list of pages."""
    site = await _site_from_query(request)
    language = _language(request)
    if language is None:
        return _page_not_found(request)
    return await _render(request, "info_index.html", language, site)


async def page(request: Request) -> Response:
    """Serve one hub page, rendered from its Markdown file."""
    site = await _site_from_query(request)
    language = _language(request)
    slug = request.path_params["slug"]
    content = get_services(request).content
    found = content.page(slug, language) if language else None
    if found is None or language is None:
        logger.info("hub page not found")
        return _page_not_found(request)
    return await _render(
        request,
        "info_page.html",
        language,
        site,
        page=found,
        page_html=_links_with_site(found.html, site),
    )


async def directory(request: Request) -> Response:
    """Serve the directory of support services."""
    site = await _site_from_query(request)
    language = _language(request)
    if language is None:
        return _page_not_found(request)
    content = get_services(request).content
    entries = [
        {
            "id": service.id,
            "name": service.name[language],
            "purpose": service.purpose[language],
            "phone": service.phone,
            "phone_href": "tel:" + service.phone.replace(" ", ""),
            "email": service.email,
            "hours": service.hours[language],
            "website": service.website,
            "languages": ", ".join(
                LANGUAGE_NAMES.get(code, code) for code in service.languages
            ),
            "checked": service.checked.isoformat() if service.checked else "",
        }
        for service in content.services
    ]
    return await _render(
        request,
        "info_services.html",
        language,
        site,
        entries=entries,
        title=content.directory_title[language],
        summary=content.directory_summary[language],
    )


routes: list[BaseRoute] = [
    Route("/info", index, methods=["GET"]),
    Route("/info/services", directory, methods=["GET"]),
    Route("/info/{slug:str}", page, methods=["GET"]),
]
