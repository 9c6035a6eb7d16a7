"""The front door of every server connection: read the request head, then hand the connection on.

``websockets``' HTTP parser refuses request bodies, so each connection first has its request head read
here (bounded in size by :data:`MAX_HEAD_BYTES` and in time by ``head_timeout_s``): a request for
``/api/...`` or with a method other than GET/HEAD goes to :class:`stream.api.HttpApi`; anything else
(static files, websocket upgrades) is handed to ``websockets`` unchanged, exactly as if it had read the
head itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ClassVar, Final

from websockets.asyncio.server import ServerConnection

from stream.api import API_PREFIX, ApiError, HttpApi, parse_head

__all__ = ["MAX_HEAD_BYTES", "FrontConnection", "front_connection"]

MAX_HEAD_BYTES: Final = 16 * 1024


@dataclass(frozen=True, slots=True)
class _FrontOptions:
    api: HttpApi
    tasks: set[asyncio.Task[None]]  # the API's request tasks, cancelled by the server on close
    head_timeout_s: float
    sized: Callable[[bytes], int | None]  # a larger frame limit for a request head (or None)


def front_connection(
    api: HttpApi,
    *,
    tasks: set[asyncio.Task[None]],
    head_timeout_s: float,
    sized: Callable[[bytes], int | None],
) -> type[ServerConnection]:
    """A ``websockets`` connection class that first reads the request head (see the module docstring).

    ``sized(head)`` may return a larger frame limit for that request (the ingest websocket's audio
    frames); ``tasks`` collects the API's request tasks so the server can cancel them on close.
    """
    options = _FrontOptions(api, tasks, head_timeout_s, sized)

    class Configured(FrontConnection):
        _front = options

    return Configured


def _wants_api(head: bytes) -> bool:
    """Whether a request head is for :class:`HttpApi` rather than websockets (static files, upgrades)."""
    line = head.split(b"\r\n", 1)[0]
    method, _, rest = line.partition(b" ")
    return method not in (b"GET", b"HEAD") or rest.startswith(API_PREFIX.encode())


class FrontConnection(ServerConnection):
    """Reads the request head before ``websockets`` sees the connection; made by :func:`front_connection`."""

    _front: ClassVar[_FrontOptions]
    _front_head: bytearray
    _front_done: bool
    _front_timer: asyncio.TimerHandle | None
    _front_transport: asyncio.Transport
    _front_ws = False  # websockets has taken the connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # websockets' own set-up (and its handshake timeout) waits until the head says it is theirs.
        assert isinstance(transport, asyncio.Transport)
        self._front_transport = transport
        self._front_head = bytearray()
        self._front_done = False
        self._front_timer = self.loop.call_later(self._front.head_timeout_s, transport.abort)

    def data_received(self, data: bytes) -> None:
        if self._front_done:
            super().data_received(data)
            return
        self._front_head += data
        end = self._front_head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._front_head) > MAX_HEAD_BYTES:
                self._front_finish()
                self._front_transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n")
                self._front_transport.close()
            return
        self._front_finish()
        buffered = bytes(self._front_head)
        self._front_head = bytearray()
        head = buffered[:end]
        if _wants_api(head):
            self._to_api(head, buffered[end + 4 :])
        else:
            self._to_websockets(head, buffered)

    def _front_finish(self) -> None:
        self._front_done = True
        if self._front_timer is not None:
            self._front_timer.cancel()
            self._front_timer = None

    def _to_websockets(self, head: bytes, buffered: bytes) -> None:
        limit = self._front.sized(head)
        if limit is not None:
            for attr in ("max_message_size", "max_size"):  # websockets >= 15 | 14
                if hasattr(self.protocol, attr):
                    setattr(self.protocol, attr, limit)
                    break
        self._front_ws = True
        super().connection_made(self._front_transport)
        super().data_received(buffered)

    def _to_api(self, head: bytes, rest: bytes) -> None:
        transport = self._front_transport
        reader = asyncio.StreamReader(limit=1 << 20)
        protocol = asyncio.StreamReaderProtocol(reader)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if rest:
            protocol.data_received(rest)
        writer = asyncio.StreamWriter(transport, protocol, reader, self.loop)
        api = self._front.api
        try:
            request = parse_head(head)
        except ApiError as exc:
            coro: Awaitable[None] = api.refuse(exc, writer)
        else:
            coro = api.handle(request, reader, writer)
        task: asyncio.Task[None] = self.loop.create_task(coro)  # type: ignore[arg-type]
        self._front.tasks.add(task)
        task.add_done_callback(self._front.tasks.discard)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._front_timer is not None:
            self._front_timer.cancel()
        if self._front_ws:
            super().connection_lost(exc)

    def eof_received(self) -> None:
        if self._front_ws:
            super().eof_received()
        # else: closed before a whole head; returning None closes our side too
