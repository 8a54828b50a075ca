"""Partner sites: keys, allowed origins and the embed snippet."""

from __future__ import annotations

import html
import ipaddress
import re
import secrets
from urllib.parse import urlsplit

from relay import i18n

# The address Quick exit sends a visitor to unless the site sets its own: a page
# that looks ordinary on anyone's screen and is reachable from everywhere.
DEFAULT_EXIT_URL = "https://www.google.com/"
EXIT_URL_MAX_CHARS = 500


def check_exit_url(text: str) -> str:
    """Return a Quick exit address; raise ``ValueError`` unless it is a plain
    absolute http or https URL without user name or password."""
    url = text.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"{text!r} is not an http or https address; write it as"
            " https://www.example.org/."
        )
    if parts.username or parts.password:
        raise ValueError(f"{text!r} contains a user name; use a plain address.")
    if len(url) > EXIT_URL_MAX_CHARS or any(char.isspace() for char in url):
        raise ValueError(
            f"The exit address must be at most {EXIT_URL_MAX_CHARS} characters"
            " without spaces."
        )
    return url


def new_site_key() -> str:
    return secrets.token_urlsafe(12)


def normalise_origin(text: str) -> str:
    """Return ``scheme://host[:port]`` as browsers send it in ``Origin``.

    Raises ``ValueError`` for anything else: a path, a query, user info or a
    scheme other than http and https.
    """
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"{text!r} is not an origin; write it as https://www.example.org."
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{text!r} has a path or query; an origin has neither.")
    if parts.username or parts.password:
        raise ValueError(f"{text!r} contains a user name; an origin has none.")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{text!r} has an invalid port.") from None
    default_port = 443 if parts.scheme == "https" else 80
    host = _normalise_host(parts.hostname, text)
    suffix = f":{port}" if port is not None and port != default_port else ""
    return f"{parts.scheme}://{host}{suffix}"


# A DNS name as browsers put it in Origin: ASCII labels, internationalised names
# in their punycode form. Wildcards and CSP punctuation are not allowed.
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


def _normalise_host(hostname: str, text: str) -> str:
    try:
        address = ipaddress.ip_address(hostname)
    except ValueError:
        pass
    else:
        return f"[{address}]" if address.version == 6 else str(address)
    try:
        host = hostname.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise ValueError(f"{text!r} has an invalid host name.") from None
    labels = host.split(".")
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(
            f"{text!r} has an invalid host name; use letters, digits, dots and"
            " dashes, without wildcards."
        )
    return host


def embed_snippet(public_url: str, site_key: str, language: str = "en") -> str:
    """Return the HTML a webmaster pastes: a plain link plus the async loader.

    Without scripts the link opens the chat page in a new tab; the loader turns
    it into a floating launcher with the link's text, and labels its close
    button with ``data-vso-close``. Both texts are in the site's ``language``.
    """
    text = i18n.translations(language).gettext
    chat_url = html.escape(f"{public_url}/chat?site={site_key}")
    loader_url = html.escape(f"{public_url}/widget/loader.js")
    key = html.escape(site_key)
    close = html.escape(text(i18n.N_("Close chat")))
    label = html.escape(text(i18n.N_("Chat with us")))
    return (
        f'<a href="{chat_url}" target="_blank" rel="noopener" lang="{language}"'
        f' data-vso-site="{key}" data-vso-close="{close}">'
        f"{label}</a>\n"
        f'<script async src="{loader_url}"></script>'
    )


def inline_snippet(public_url: str, site_key: str, language: str = "en") -> str:
    """Return the alternative snippet: the chat page in a plain iframe.

    For partners who want the chat inside the page. It needs no script on the
    partner page or in the visitor's browser. The chat page's CSP lets only the
    site's allowed origins frame it.
    """
    chat_url = html.escape(f"{public_url}/chat?site={site_key}")
    title = html.escape(
        i18n.translations(language).gettext(i18n.N_("Chat with a volunteer"))
    )
    return (
        f'<iframe src="{chat_url}" title="{title}"'
        ' width="380" height="600" referrerpolicy="no-referrer"'
        ' loading="lazy"></iframe>'
    )
