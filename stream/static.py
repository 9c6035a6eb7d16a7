"""The dashboard's static files: the ``web`` package's files, looked up by exact URL path.

Found with :mod:`importlib.resources`, so an installed wheel works too. Only files listed when the
server starts can be served: no path is ever joined from the request, so there is no way outside
``web/`` and no directory listing.
"""

from __future__ import annotations

import http
import logging
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Final

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Response

__all__ = ["CONTENT_TYPES", "static_files", "static_response"]

logger = logging.getLogger(__name__)

CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}
# Same-origin only; the page needs no inline script and no third-party host.
_CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def static_files(package: str = "web") -> dict[str, Traversable]:
    """URL path -> file for every servable file in ``package`` (``/`` is ``index.html``)."""
    table: dict[str, Traversable] = {}

    def walk(folder: Traversable, prefix: str) -> None:
        for entry in folder.iterdir():
            name = entry.name
            if name.startswith((".", "_")):
                continue
            if entry.is_dir():
                walk(entry, f"{prefix}{name}/")
            elif entry.is_file() and _suffix(name) in CONTENT_TYPES:
                table[f"{prefix}{name}"] = entry

    walk(resources.files(package), "/")
    if "/index.html" not in table:
        # e.g. a folder named `web` earlier on sys.path shadows the installed package
        raise RuntimeError(f"the {package!r} package at {resources.files(package)} has no index.html")
    table["/"] = table["/index.html"]
    return table


def _suffix(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:].lower() if dot > 0 else ""


def static_response(
    connection: ServerConnection, file: Traversable | None, path: str, *, head_only: bool, cookie: str | None
) -> Response:
    """The answer to a GET (or HEAD, ``head_only``) of ``path``, whose file is ``file`` (``None``: 404).

    ``cookie`` is a ``Set-Cookie`` value to send with it.
    """
    if file is None:
        return connection.respond(http.HTTPStatus.NOT_FOUND, "not found\n")
    try:
        body = file.read_bytes()
    except OSError as exc:  # pragma: no cover - the package was modified under us
        logger.error("cannot read static file %s: %s", path, exc)
        return connection.respond(http.HTTPStatus.INTERNAL_SERVER_ERROR, "cannot read file\n")
    name = "index.html" if path == "/" else path
    headers = Headers(
        [
            ("Content-Type", CONTENT_TYPES[_suffix(name)]),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),  # websockets answers one request per connection
            ("Cache-Control", "no-cache"),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
            ("Content-Security-Policy", _CSP),
        ]
    )
    if cookie is not None:
        headers["Set-Cookie"] = cookie
    return Response(200, "OK", headers, b"" if head_only else body)
