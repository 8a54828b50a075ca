"""HTML pages: Jinja2 environments, static file URLs and security headers."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import jinja2
from starlette.requests import HTTPConnection
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from relay import i18n
from relay.assets import StaticAssets
from relay.settings import Settings

# Headers every HTTP response carries unless the route set its own.
DEFAULT_HEADERS: dict[str, str] = {
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=()",
}


def make_templates(directory: Path, assets: StaticAssets) -> Jinja2Templates:
    """Return templates with autoescape on, gettext and page helpers.

    ``static_url`` adds a digest of the served file, so browsers fetch a new
    version after an upgrade. ``current_language()`` and ``text_direction()``
    fill the ``lang`` and ``dir`` attributes, and ``script_texts(name)`` the
    translations a script reads from its page.
    """
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(directory),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        extensions=["jinja2.ext.i18n"],
    )
    environment.install_gettext_callables(  # type: ignore[attr-defined]
        i18n.gettext, i18n.ngettext, newstyle=True
    )
    environment.globals["static_url"] = assets.url
    environment.globals["current_language"] = i18n.current_language
    environment.globals["text_direction"] = i18n.text_direction
    environment.globals["format_time"] = i18n.format_time
    environment.globals["language_names"] = i18n.language_names
    environment.globals["script_texts"] = script_texts_function(assets.directory)
    return Jinja2Templates(env=environment)


def script_texts_function(directory: Path) -> Callable[[str], dict[str, str]]:
    """Return ``script_texts(name)``: the translations a static script needs.

    A page puts them in a ``<script type="application/json">`` block, which
    the CSP allows because browsers do not run it.
    """

    def script_texts(name: str) -> dict[str, str]:
        return i18n.script_texts(directory / name)

    return script_texts


def serving_origin(connection: HTTPConnection, settings: Settings) -> str:
    """Return the origin the browser used, when it is one of the relay's own.

    On loopback both ``localhost`` and ``127.0.0.1`` reach the relay, and cookies
    and WebSockets must stay on the name the page was loaded from. Any other Host
    header falls back to ``VSO_PUBLIC_URL``.
    """
    origin = f"{connection.url.scheme}://{connection.url.netloc}"
    return origin if origin in settings.own_origins else settings.public_origin


def content_security_policy(
    *,
    connect: Iterable[str] = (),
    frame_ancestors: Iterable[str] = (),
    frame_src: Iterable[str] = (),
) -> str:
    """Build a CSP that allows only the relay's own scripts and styles.

    An empty ``frame_ancestors`` forbids framing the page at all.
    """
    ancestors = " ".join(frame_ancestors) or "'none'"
    directives = [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src " + " ".join(["'self'", *connect]),
        "base-uri 'none'",
        "form-action 'self'",
        f"frame-ancestors {ancestors}",
    ]
    sources = list(frame_src)
    if sources:
        directives.append("frame-src " + " ".join(sources))
    return "; ".join(directives)


class SecurityHeadersMiddleware:
    """Add ``DEFAULT_HEADERS`` (and HSTS over HTTPS) to every HTTP response."""

    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in DEFAULT_HEADERS.items():
                    if name.encode() not in present:
                        headers.append((name.encode(), value.encode()))
                if self.hsts and b"strict-transport-security" not in present:
                    headers.append((b"strict-transport-security", b"max-age=31536000"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
