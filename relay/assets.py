"""Static files: read and minified once at start, then served from memory.

Scripts and style sheets are minified (rJSmin, rCSSmin) because the visitor's
chat page is fetched over slow and expensive connections. Each file's URL from
``url`` carries a digest of what is served, so a browser may keep that version
for a year. A request without the current digest gets ``no-cache``, so the
browser revalidates it with the ``ETag``. Scripts import each other by plain
paths, which therefore always revalidate.
"""

from __future__ import annotations

import hashlib
import mimetypes
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import rcssmin
import rjsmin
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

MINIFIERS: dict[str, Callable[[str], str]] = {
    ".js": rjsmin.jsmin,
    ".css": rcssmin.cssmin,
}
MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
CACHE_VERSIONED = "public, max-age=31536000, immutable"
CACHE_UNVERSIONED = "no-cache"


@dataclass(frozen=True, slots=True)
class Asset:
    """One file as served: its bytes, media type and content digest."""

    body: bytes
    media_type: str
    digest: str

    @property
    def etag(self) -> str:
        return f'"{self.digest}"'


def load_asset(path: Path) -> Asset:
    """Read ``path``, minify it when it is a script or style sheet."""
    suffix = path.suffix.lower()
    body = path.read_bytes()
    minify = MINIFIERS.get(suffix)
    if minify is not None:
        body = minify(body.decode("utf-8")).encode("utf-8")
    media_type = MEDIA_TYPES.get(suffix) or (
        mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    )
    return Asset(body, media_type, hashlib.sha256(body).hexdigest()[:12])


class StaticAssets:
    """The files of one directory, served under ``prefix``."""

    def __init__(self, directory: Path, prefix: str) -> None:
        self.directory = directory
        self.prefix = prefix
        self.assets = {
            path.relative_to(directory).as_posix(): load_asset(path)
            for path in sorted(directory.rglob("*"))
            if path.is_file()
        }

    def __getitem__(self, name: str) -> Asset:
        return self.assets[name]

    def url(self, name: str) -> str:
        """Return the URL of ``name`` with the digest of its served content."""
        return f"{self.prefix}/{name}?v={self.assets[name].digest}"

    def mount(self, name: str) -> Mount:
        """Return the route that serves every file under ``prefix``."""
        return Mount(self.prefix, routes=[Route("/{path:path}", self.serve)], name=name)

    async def serve(self, request: Request) -> Response:
        asset = self.assets.get(request.path_params["path"])
        if asset is None:
            raise HTTPException(status_code=404)
        versioned = request.query_params.get("v") == asset.digest
        return asset_response(
            request,
            asset,
            {"cache-control": CACHE_VERSIONED if versioned else CACHE_UNVERSIONED},
        )


def asset_response(request: Request, asset: Asset, headers: dict[str, str]) -> Response:
    """Return ``asset`` with ``headers``, or 304 when the browser has that version."""
    headers = {**headers, "etag": asset.etag}
    if asset.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)
