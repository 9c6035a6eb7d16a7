"""Who may use the server: origins, host names and the access token (sans-I/O, tested without sockets).

Safe by default (a page on any other site must not read a user's transcripts through their browser):

- **Origin.** A browser sends the page's origin with every websocket handshake and ``POST``. It must be
  the dashboard's own origin (``http://HOST:PORT`` it serves on; ``localhost``, ``127.0.0.1`` and ``[::1]``
  spellings on loopback) or one listed in ``server.allowed_origins``; anything else gets **403** before
  any upgrade. Clients that send no ``Origin`` (scripts, the CLI) are not browsers and pass this check.
  This also defeats DNS rebinding (a foreign name made to resolve to 127.0.0.1, so that its pages are
  "same origin" with us): their origin is still the foreign name, and browsers send ``Origin`` on every
  websocket handshake and ``POST``, the only requests that reach data.
- **Token.** When ``server.token`` is set (required to bind a non-loopback address) every HTTP and
  websocket request must carry it: ``Authorization: Bearer T``, ``?token=T``, or the ``emostream_token``
  cookie the server sets when the page is opened with ``?token=T``. Compared in constant time.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "COOKIE_NAME",
    "MIN_TOKEN_CHARS",
    "AccessPolicy",
    "Grant",
    "Refusal",
    "is_loopback",
    "origin_problem",
    "request_token",
]

COOKIE_NAME: Final = "emostream_token"
MIN_TOKEN_CHARS: Final = 16
_LOOPBACK_NAMES: Final = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    """``host`` (a bind address or a host name) only reaches this machine."""
    if host in ("localhost", "") or host.endswith(".localhost"):
        return host != ""  # "" binds every interface
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def origin_problem(origin: str) -> str | None:
    """Why ``origin`` is not of the form ``scheme://host[:port]`` (None when it is)."""
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must start with http:// or https:// and name a host"
    if parts.path or parts.query or parts.fragment or parts.username or parts.password:
        return "must be scheme://host[:port] only (no path, query or user)"
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return "has an invalid port"
    return None


def _normalise_origin(origin: str) -> str:
    """Lower-case scheme and host, default port dropped: how browsers serialise an origin."""
    parts = urlsplit(origin.strip())
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        return origin
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    suffix = "" if port is None or port == default else f":{port}"
    return f"{parts.scheme.lower()}://{host}{suffix}"


def request_token(headers: Mapping[str, str], target: str) -> tuple[str | None, str]:
    """The token a request carries and where from: ``("...", "header"|"query"|"cookie")`` or ``(None, "")``."""
    auth = headers.get("Authorization") or ""
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), "header"
    query = parse_qs(urlsplit(target).query, max_num_fields=32)
    if query.get("token"):
        return query["token"][0], "query"
    for part in (headers.get("Cookie") or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE_NAME and value:
            return value, "cookie"
    return None, ""


@dataclass(frozen=True, slots=True)
class Refusal:
    """Answer the request with ``status`` (401 or 403) and ``message``; nothing else happens."""

    status: int
    message: str


@dataclass(frozen=True, slots=True)
class Grant:
    """The request may go on; ``set_cookie`` when it brought the token in its URL (the page's first load)."""

    set_cookie: bool = False


class AccessPolicy:
    """The rules above for a server bound to ``host``:``port`` (the real port, once bound)."""

    def __init__(self, host: str, port: int, *, allowed_origins: Iterable[str] = (), token: str = "") -> None:
        if not is_loopback(host) and not token:
            raise ValueError(
                f"refusing to serve on {host or 'every interface'!r} without server.token: anyone who can reach "
                "it could read the transcripts. Set server.token (or EMOSTREAM_TOKEN), or bind to 127.0.0.1"
            )
        self.host = host
        self.port = port
        self._token = token.encode("utf-8")
        self.allowed_origins = frozenset(_normalise_origin(o) for o in allowed_origins)
        names = {host.lower()} if host not in ("", "0.0.0.0", "::") else set()
        if is_loopback(host) or not names:
            names |= set(_LOOPBACK_NAMES)
        self._own_names = frozenset(names)
        self.own_origins = frozenset(
            _normalise_origin(f"{scheme}://{f'[{n}]' if ':' in n else n}:{port}")
            for n in self._own_names
            for scheme in ("http", "https")
        )

    @property
    def token_required(self) -> bool:
        return bool(self._token)

    def check(self, headers: Mapping[str, str], target: str) -> Grant | Refusal:
        """Decide one request from its headers and request target (path + query)."""
        origin = headers.get("Origin")
        host_header = headers.get("Host") or ""
        if origin is not None and not self._origin_ok(_normalise_origin(origin), host_header):
            return Refusal(403, f"origin {origin[:100]!r} is not allowed (server.allowed_origins)")
        if not self._token:
            return Grant()  # loopback only (see __init__); no Origin: a script on this machine
        given, where = request_token(headers, target)
        if given is None:
            return Refusal(401, "this server needs its access token: open the URL it printed (…/?token=…)")
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), self._token):
            return Refusal(401, "wrong access token")
        return Grant(set_cookie=where == "query")

    def _origin_ok(self, origin: str, host_header: str) -> bool:
        if origin in self.allowed_origins or origin in self.own_origins:
            return True
        # With a token, the page may be reached by any name of this machine (a LAN address): its own
        # origin is then what its Host header says. Without the token such a page gets nothing anyway.
        return (
            bool(self._token)
            and host_header != ""
            and origin
            in (
                _normalise_origin(f"http://{host_header}"),
                _normalise_origin(f"https://{host_header}"),
            )
        )

    def cookie_header(self) -> str:
        """``Set-Cookie`` value that keeps the token for the page's later requests (this tab's session)."""
        return f"{COOKIE_NAME}={self._token.decode('utf-8')}; Path=/; HttpOnly; SameSite=Strict"
