"""The HTTP API beside the event stream: ``POST /api/classify`` (a sentence) and ``POST /api/streams`` (a file).

``websockets`` serves the static files and the websockets, but its HTTP parser refuses request bodies.
So each connection first goes through :mod:`stream.front`, which reads the request head (bounded in
size and time): a request for ``/api/...`` or with a method other than GET/HEAD is answered here by
:class:`HttpApi`; anything else is handed to ``websockets`` unchanged, exactly as if it had read the
head itself. Both paths apply the same :class:`stream.access.AccessPolicy`.

Errors have the shape of the websocket's ``error`` events: ``{"error": {"code", "message"}}`` with the
codes of ``stream.protocol.ERROR_CODES`` and an HTTP status that says the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import parse_qs, urlsplit

from websockets.datastructures import Headers

from stream.access import AccessPolicy, Refusal
from stream.client_messages import parse_classify_request
from stream.protocol import ProtocolError

__all__ = ["API_PREFIX", "ApiError", "Backend", "HttpApi", "HttpRequest", "parse_head", "stream_name"]

logger = logging.getLogger(__name__)

API_PREFIX: Final = "/api/"
_READ_TIMEOUT_S: Final = 30.0  # a client that stops sending its body for this long is dropped
_WRITE_CHUNK: Final = 1 << 20
_LINGER_S: Final = 2.0  # how long a refused body is drained so the client can read the refusal
_LINGER_BYTES: Final = 16 << 20
_NAME_CHARS: Final = re.compile(r"[^A-Za-z0-9_.-]+")


class ApiError(Exception):
    """Answer with ``status`` and ``{"error": {"code": code, "message": message}}``."""

    def __init__(self, status: int, code: str, message: str, *, allow: str = "") -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.allow = allow  # the Allow header of a 405


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    target: str  # path and query, as sent
    path: str
    query: dict[str, list[str]]
    headers: Headers


def parse_head(raw: bytes) -> HttpRequest:
    """An HTTP/1.1 request head (request line and headers, without the blank line). Raises ApiError."""
    try:
        text = raw.decode("latin-1")
        line, *rest = text.split("\r\n")
        method, target, version = line.split(" ")
    except ValueError:
        raise ApiError(400, "bad_message", "malformed HTTP request line") from None
    if version not in ("HTTP/1.1", "HTTP/1.0") or not method.isalpha() or not target.startswith("/"):
        raise ApiError(400, "bad_message", "malformed HTTP request line")
    headers = Headers()
    for item in rest:
        name, sep, value = item.partition(":")
        if not sep or not name or name.strip() != name:
            raise ApiError(400, "bad_message", "malformed HTTP header")
        headers[name] = value.strip()
    parts = urlsplit(target)
    return HttpRequest(method.upper(), target, parts.path, parse_qs(parts.query, max_num_fields=32), headers)


def stream_name(raw: str) -> str:
    """A client's stream name -> a safe stream id (letters, digits, ``_ . -``; at most 48 characters)."""
    name = _NAME_CHARS.sub("-", raw.strip()).strip("-.")[:48]
    if not name or name.startswith("_"):
        raise ApiError(400, "bad_request", "name must contain a letter or digit and not start with '_'")
    return name


class Backend(Protocol):
    """What the API needs from the running service (see ``stream.service``)."""

    async def classify_text(self, text: str) -> dict[str, Any]:
        """``{"label", "scores", "modalities"}`` for ``text`` (ApiError when there is no text branch)."""
        ...

    async def add_file_stream(self, name: str, path: Path, *, display_name: str) -> dict[str, Any]:
        """Start replaying ``path`` as a new stream; returns ``{"stream", "name", ...}``."""
        ...

    def upload_dir(self) -> Path:
        """Where uploaded files are kept (under the run's folder)."""
        ...


class HttpApi:
    """Routes and answers the API's requests on one connection each (``Connection: close``)."""

    def __init__(
        self,
        backend: Backend | None,
        access: Callable[[], AccessPolicy],
        *,
        max_message_bytes: int,
        max_upload_bytes: int,
        max_uploads: int = 2,
        max_classify_waiting: int = 16,
    ) -> None:
        self.backend = backend
        self._access = access
        self.max_message_bytes = max_message_bytes
        self.max_upload_bytes = max_upload_bytes
        self._uploads = asyncio.Semaphore(max_uploads)
        self._max_uploads = max_uploads
        # Sentences wait for the one classifier thread; beyond this many the API says busy (429)
        # rather than queue without bound.
        self._classifying = 0
        self.max_classify_waiting = max_classify_waiting
        self.requests = 0
        self.errors = 0

    async def handle(self, request: HttpRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.requests += 1
        try:
            allow = ""
            try:
                status, body = await self._route(request, reader, writer)
            except ApiError as exc:
                self.errors += 1
                status, body, allow = exc.status, {"error": {"code": exc.code, "message": exc.message}}, exc.allow
            except Exception:
                logger.exception("%s %s failed", request.method, request.path[:100])
                self.errors += 1
                status, body = 500, {"error": {"code": "internal", "message": "internal error; see the service log"}}
            await _respond(writer, status, body, allow=allow)
            if status >= 400:
                await _linger(reader, writer)
        except (ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def refuse(self, error: ApiError, writer: asyncio.StreamWriter) -> None:
        """Answer a request that could not even be parsed with ``error``, then close the connection."""
        try:
            await _respond(writer, error.status, {"error": {"code": error.code, "message": error.message}})
        except (ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()

    async def _route(
        self, request: HttpRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[int, dict[str, Any]]:
        decision = self._access().check(request.headers, request.target)
        if isinstance(decision, Refusal):
            logger.warning("refused %s %s: %s", request.method, request.path[:100], decision.message)
            code = "forbidden" if decision.status == 403 else "unauthorized"
            raise ApiError(decision.status, code, decision.message)
        if not request.path.startswith(API_PREFIX):
            raise ApiError(405, "bad_request", f"only GET and HEAD at {request.path[:100]}", allow="GET, HEAD")
        routes = {"/api/classify": self._classify, "/api/streams": self._upload}
        handler = routes.get(request.path)
        if handler is None:
            raise ApiError(404, "not_found", f"no API at {request.path[:100]}; there are {', '.join(routes)}")
        if request.method != "POST":
            raise ApiError(405, "bad_request", f"{request.path} takes POST", allow="POST")
        if self.backend is None:
            raise ApiError(503, "unavailable", "this server has no pipeline to run requests on")
        return await handler(request, reader, writer)

    async def _classify(
        self, request: HttpRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[int, dict[str, Any]]:
        assert self.backend is not None
        size = _content_length(request, self.max_message_bytes, "server.max_message_bytes")
        await _continue(request, writer)
        body = await _read_exactly(reader, size)
        try:
            text = parse_classify_request(body)
        except ProtocolError as exc:
            raise ApiError(400, exc.code, exc.message) from None
        if self._classifying >= self.max_classify_waiting:
            raise ApiError(
                429, "busy", f"{self._classifying} sentences are waiting for the classifier; try again shortly"
            )
        self._classifying += 1
        try:
            return 200, await self.backend.classify_text(text)
        finally:
            self._classifying -= 1

    async def _upload(
        self, request: HttpRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[int, dict[str, Any]]:
        assert self.backend is not None
        raw_name = (request.query.get("name") or [""])[0]
        if not raw_name:
            raise ApiError(400, "bad_request", "say the stream's name: POST /api/streams?name=NAME")
        name = stream_name(raw_name)
        size = _content_length(request, self.max_upload_bytes, "server.max_upload_mb")
        if size == 0:
            raise ApiError(400, "bad_request", "the file is empty")
        if self._uploads.locked():
            raise ApiError(429, "busy", f"{self._max_uploads} uploads are already in progress; try again shortly")
        async with self._uploads:
            await _continue(request, writer)
            folder = self.backend.upload_dir()
            path = await _store(reader, size, folder, name)
            try:
                result = await self.backend.add_file_stream(name, path, display_name=raw_name[:200])
            except BaseException:
                _discard(path)
                raise
        logger.info("upload of %d bytes stored at %s, replaying as stream %s", size, path, result.get("stream"))
        return 201, {**result, "bytes": size}


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """After refusing a request whose body was not read, read and drop some of it before closing:
    closing with unread data resets the connection, and the client would lose our answer."""
    with contextlib.suppress(OSError, RuntimeError):
        if writer.can_write_eof():
            writer.write_eof()
    loop = asyncio.get_running_loop()
    deadline, left = loop.time() + _LINGER_S, _LINGER_BYTES
    with contextlib.suppress(ConnectionError, TimeoutError):
        while left > 0 and (remaining := deadline - loop.time()) > 0:
            chunk = await asyncio.wait_for(reader.read(min(left, 1 << 16)), remaining)
            if not chunk:
                break
            left -= len(chunk)


def _content_length(request: HttpRequest, limit: int, key: str) -> int:
    if "Transfer-Encoding" in request.headers:
        raise ApiError(411, "bad_request", "send the body with a Content-Length (no chunked transfer)")
    raw = request.headers.get("Content-Length")
    if raw is None:
        raise ApiError(411, "bad_request", "send the body with a Content-Length")
    if not raw.isdigit():
        raise ApiError(400, "bad_message", "Content-Length must be a number")
    size = int(raw)
    if size > limit:
        raise ApiError(413, "bad_message", f"a body of {size} bytes exceeds the {limit}-byte limit ({key})")
    return size


async def _continue(request: HttpRequest, writer: asyncio.StreamWriter) -> None:
    """Answer ``Expect: 100-continue`` (curl sends it for large bodies) once the request is accepted."""
    if request.headers.get("Expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()


async def _read_exactly(reader: asyncio.StreamReader, size: int) -> bytes:
    try:
        return await asyncio.wait_for(reader.readexactly(size), _READ_TIMEOUT_S)
    except asyncio.IncompleteReadError:
        raise ApiError(400, "bad_message", "the body ended before Content-Length bytes") from None
    except TimeoutError:
        raise ApiError(408, "bad_message", f"no body data for {_READ_TIMEOUT_S:g} s") from None


async def _store(reader: asyncio.StreamReader, size: int, folder: Path, name: str) -> Path:
    """Copy the body to a new file in ``folder`` (disk writes in a worker thread); returns its path."""
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, lambda: folder.mkdir(parents=True, exist_ok=True))
    fd, tmp = await loop.run_in_executor(None, lambda: tempfile.mkstemp(prefix=f"{name}-", suffix=".part", dir=folder))
    path = Path(tmp)
    try:
        try:
            left = size
            while left:
                chunk = await _read_some(reader, min(left, _WRITE_CHUNK))
                await loop.run_in_executor(None, _write_all, fd, chunk)
                left -= len(chunk)
        finally:
            os.close(fd)
        final = path.with_suffix(".upload")
        await loop.run_in_executor(None, path.rename, final)
        return final
    except BaseException:
        _discard(path)
        raise


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _discard(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


async def _read_some(reader: asyncio.StreamReader, limit: int) -> bytes:
    try:
        chunk = await asyncio.wait_for(reader.read(limit), _READ_TIMEOUT_S)
    except TimeoutError:
        raise ApiError(408, "bad_message", f"no upload data for {_READ_TIMEOUT_S:g} s") from None
    if not chunk:
        raise ApiError(400, "bad_message", "the upload ended before Content-Length bytes")
    return chunk


async def _respond(writer: asyncio.StreamWriter, status: int, body: dict[str, Any], *, allow: str = "") -> None:
    payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    phrase = http.HTTPStatus(status).phrase
    extra = f"Allow: {allow}\r\n" if allow else ""
    head = (
        f"HTTP/1.1 {status} {phrase}\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        f"Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n{extra}Connection: close\r\n\r\n"
    )
    writer.write(head.encode("latin-1") + payload)
    await asyncio.wait_for(writer.drain(), _READ_TIMEOUT_S)
