"""One asyncio server for the dashboard's static files (``/``) and the event stream (``/ws``).

Built on ``websockets``: its ``process_request`` hook answers plain HTTP requests with the files of the
``web`` package (:mod:`stream.static`) and lets ``/ws`` upgrade.

Per connection: a ``hello`` event, then live events from a :class:`stream.events.hub.Subscription`. Client
messages (``subscribe``, ``resume``, ``ping``, ``name_speaker``) are handled in order by the one task that sends, so a
reply never overtakes the events before it. ``resume`` replays the bus's history (this run's event
log, or Redis for a gateway) and rejoins the live flow with no gap and no duplicate (see
:meth:`Server._resume`).
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final
from urllib.parse import urlsplit

from websockets.asyncio.server import Server as WsServer
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from stream.access import AccessPolicy, Refusal
from stream.api import Backend, HttpApi
from stream.client_messages import ClientMessage, parse_client_message
from stream.config import ServerConfig
from stream.events.bus import EventHistory
from stream.events.eventlog import EventLog, LogHistory
from stream.events.hub import Hub, Published, Subscription
from stream.front import front_connection
from stream.protocol import (
    CONNECTION_STREAM,
    DEFAULT_DESCRIPTION,
    ProtocolError,
    error_data,
    hello_data,
)
from stream.static import static_files, static_response

__all__ = ["INGEST_PATH", "WS_PATH", "Server"]

logger = logging.getLogger(__name__)
# websockets logs every HTTP request and connection at INFO; keep that out of the service log.
_ws_logger = logging.getLogger(__name__ + ".websockets")
if _ws_logger.level == logging.NOTSET:
    _ws_logger.setLevel(logging.WARNING)

WS_PATH: Final = "/ws"
INGEST_PATH: Final = "/ingest"
_HEAD_TIMEOUT_S: Final = 10.0  # a client must send its whole request head within this
_SEND_BATCH: Final = 64
_REPLAY_YIELD_EVERY: Final = 256  # a resume replay lets the other connections run this often
_COMMAND_QUEUE: Final = 16
_MAX_GAPS: Final = 256  # lagged ranges remembered per connection (see _Connection.has)
_CATCH_UP_S: Final = 0.5  # a new connection waits at most this long for the hub to reach the history's head
_CATCH_UP_POLL_S: Final = 0.005


@dataclass(slots=True, eq=False)  # hashed by identity: kept in a set
class _Connection:
    ws: ServerConnection
    sub: Subscription
    commands: asyncio.Queue[ClientMessage | ProtocolError] = field(
        default_factory=lambda: asyncio.Queue(maxsize=_COMMAND_QUEUE)
    )
    # What this client already holds since the current phase began (so `resume` never repeats it):
    # every accepted event with phase_from < seq <= sent_max, except the ranges it was told it lost.
    phase_from: int = -1
    sent_max: int = -1
    gaps: list[tuple[int, int]] = field(default_factory=list)

    def has(self, seq: int) -> bool:
        return self.phase_from < seq <= self.sent_max and not any(a <= seq <= b for a, b in self.gaps)

    def new_phase(self, after: int, upto: int) -> None:
        self.phase_from, self.sent_max, self.gaps = after, upto, []

    # Live events up to this seq are not sent: the client said it holds them (a `resume` on a gateway
    # that had not yet read as far as the gateway the client came from).
    floor: int = -1


class Server:
    """The websocket + static file server. Use as ``async with Server(...) as server:``.

    ``hello`` is called for every new connection and returns the service part of the ``hello``
    event's data (``labels``, ``colors``, ``streams``, ``model_ids``, ...); the server adds
    ``protocol``, ``run_id``, ``last_seq`` and its limits. ``history`` is what ``resume`` replays:
    this run's :class:`EventLog` (wrapped in a :class:`LogHistory`) or any :class:`EventHistory`.
    """

    def __init__(
        self,
        config: ServerConfig,
        hub: Hub,
        history: EventLog | EventHistory,
        hello: Callable[[], Mapping[str, Any]],
        *,
        backend: Backend | None = None,
        ingest: Callable[[ServerConnection], Awaitable[None]] | None = None,
        name_speaker: Callable[[str, str, str], Awaitable[None]] | None = None,
    ) -> None:
        self.config = config
        self._backend = backend
        self._ingest = ingest
        self._api_tasks: set[asyncio.Task[None]] = set()
        self.api = HttpApi(
            backend,
            lambda: self.access,
            max_message_bytes=config.max_message_bytes,
            max_upload_bytes=config.max_upload_mb << 20,
        )
        self.hub = hub
        self.history: EventHistory = (
            LogHistory(history, lambda: hub.last_seq) if isinstance(history, EventLog) else history
        )
        self._hello = hello
        # A client's name_speaker message: broadcasts a `speaker` event; ValueError = refused (None: no stage).
        self._name_speaker = name_speaker
        self._files = static_files()
        self._connections: set[_Connection] = set()
        self._ws_server: WsServer | None = None
        self.port: int = config.port
        self.refused = 0  # connections refused because the server was full
        self.refused_access = 0  # requests refused for their origin, host or token
        # Until bound, the policy knows the configured port only (0: no browser origin matches yet).
        self.access = self._policy(config.port)

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Server:
        cfg = self.config
        self._ws_server = await serve(
            self._handle,
            cfg.host,
            cfg.port,
            process_request=self._process_request,
            max_size=cfg.max_message_bytes,
            ping_interval=cfg.ping_interval_s,
            ping_timeout=cfg.ping_timeout_s,
            close_timeout=2.0,
            # No permessage-deflate: it would compress every event once per connection, which costs
            # more CPU than the small JSON events save in bandwidth on a fan-out server.
            compression=None,
            server_header=None,
            logger=_ws_logger,
            # Reads each request head first: the HTTP API (POST bodies) is answered by stream.api.
            create_connection=front_connection(
                self.api, tasks=self._api_tasks, head_timeout_s=_HEAD_TIMEOUT_S, sized=self._frame_limit
            ),
        )
        sockets = list(self._ws_server.sockets)
        if sockets:
            self.port = sockets[0].getsockname()[1]
            self.access = self._policy(self.port)
        if self.access.token_required:
            logger.info("dashboard at %s?token=%s (websocket %s)", self.url, cfg.token, self.ws_url)
        else:
            logger.info("dashboard at %s (websocket %s)", self.url, self.ws_url)
        return self

    def _policy(self, port: int) -> AccessPolicy:
        cfg = self.config
        return AccessPolicy(cfg.host, port, allowed_origins=cfg.allowed_origins, token=cfg.token)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def _frame_limit(self, head: bytes) -> int | None:
        """The ingest websocket takes audio frames larger than a client message."""
        target = head.split(b"\r\n", 1)[0].split(b" ")[1:2]
        if target and urlsplit(target[0].decode("latin-1")).path == INGEST_PATH:
            return self.config.ingest_max_frame_bytes
        return None

    async def aclose(self) -> None:
        """Close every connection (1001 going away) and stop listening."""
        for task in list(self._api_tasks):
            task.cancel()
        if self._ws_server is not None:
            server, self._ws_server = self._ws_server, None
            server.close()
            await server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://{_url_host(self.config.host)}:{self.port}/"

    @property
    def ws_url(self) -> str:
        return f"ws://{_url_host(self.config.host)}:{self.port}{WS_PATH}"

    @property
    def event_log(self) -> EventLog | None:
        """This run's event log when ``history`` is one (``None`` for a gateway on Redis)."""
        return self.history.log if isinstance(self.history, LogHistory) else None

    @property
    def connections(self) -> int:
        return len(self._connections)

    # -- HTTP ------------------------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        decision = self.access.check(request.headers, request.path)
        if isinstance(decision, Refusal):
            self.refused_access += 1
            logger.warning("refused %s: %s", path[:100], decision.message)
            return connection.respond(http.HTTPStatus(decision.status), decision.message + "\n")
        if path == WS_PATH or (path == INGEST_PATH and self._ingest is not None):
            return None  # let websockets complete (or refuse) the upgrade
        method = getattr(request, "method", "GET")
        if method not in ("GET", "HEAD"):
            response = connection.respond(http.HTTPStatus.METHOD_NOT_ALLOWED, "only GET and HEAD\n")
            response.headers["Allow"] = "GET, HEAD"
            return response
        # The page came with ?token=: its scripts and sockets send the cookie.
        cookie = self.access.cookie_header() if decision.set_cookie else None
        return static_response(connection, self._files.get(path), path, head_only=method == "HEAD", cookie=cookie)

    # -- websocket -------------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        if self._ingest is not None and ws.request is not None and urlsplit(ws.request.path).path == INGEST_PATH:
            await self._ingest(ws)
            return
        limit = self.config.max_connections
        if len(self._connections) >= limit:
            self.refused += 1
            logger.warning("refused a websocket: %d connections open (server.max_connections)", limit)
            await ws.close(CloseCode.TRY_AGAIN_LATER, f"server full: at most {limit} connections")
            return
        await self._catch_up()
        # Subscribe before building hello: every event after hello's watermark is then queued.
        conn = _Connection(ws, self.hub.subscribe())
        watermark = self.hub.last_seq
        conn.new_phase(-1 if watermark is None else watermark, -1 if watermark is None else watermark)
        self._connections.add(conn)
        sender: asyncio.Task[None] | None = None
        try:
            await self._send(conn, Published.of(self.hub.connection_event("hello", self._hello_data())))
            sender = asyncio.create_task(self._send_loop(conn), name="ws-send")
            async for raw in ws:
                try:
                    command: ClientMessage | ProtocolError = parse_client_message(raw)
                except ProtocolError as exc:
                    command = exc
                if conn.commands.full():
                    # Back-pressure on this client: wait for its sender to take a command -- unless the
                    # sender has ended (the connection died while blocked), which would never happen.
                    put = asyncio.ensure_future(conn.commands.put(command))
                    await asyncio.wait((put, sender), return_when=asyncio.FIRST_COMPLETED)
                    if not put.done():
                        put.cancel()
                        break
                else:
                    conn.commands.put_nowait(command)
                conn.sub.wake()
        except ConnectionClosed:
            pass
        finally:
            if sender is not None:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await sender
            conn.sub.close()
            self._connections.discard(conn)

    async def _catch_up(self) -> None:
        """Wait, at most ``_CATCH_UP_S``, until the hub has published every event the history held when
        this connection arrived.

        A gateway reads Redis a little behind the others. A client moving to it from a gateway that
        had read further holds events this hub has not published yet; sent live after ``hello``, before
        the client's ``resume`` is read, they would reach it twice. With the hub at the history's head,
        every live event is newer than anything the client can hold. For the service's own event log
        the head is the hub's watermark already, so this returns at once. Bounded, so a history that
        cannot answer (Redis down) or a seq that was counted but never written delays ``hello`` only
        briefly."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _CATCH_UP_S
        try:
            head = await asyncio.wait_for(self.history.head_seq(), _CATCH_UP_S)
        except Exception:  # best effort: the connection proceeds from where the hub is
            return
        while head is not None and (self.hub.last_seq is None or self.hub.last_seq < head):
            if loop.time() >= deadline:
                return
            await asyncio.sleep(_CATCH_UP_POLL_S)

    def _hello_data(self) -> dict[str, Any]:
        description = dict(DEFAULT_DESCRIPTION)
        try:
            description.update(self._hello())
        except Exception:
            logger.exception("the hello() callback failed; sending the defaults")
        limits = {
            "max_message_bytes": self.config.max_message_bytes,
            "queue_events": self.hub.queue_events,
            "ping_interval_s": self.config.ping_interval_s,
            "max_upload_bytes": self.config.max_upload_mb << 20,
            "ingest_max_frame_bytes": self.config.ingest_max_frame_bytes,
        }
        return hello_data(description, run_id=self.history.run_id, last_seq=self.hub.last_seq, limits=limits)

    async def _send(self, conn: _Connection, item: Published) -> None:
        event = item.event
        if event.stream != CONNECTION_STREAM:
            conn.sent_max = max(conn.sent_max, event.seq)
        elif event.type == "lagged":
            if len(conn.gaps) >= _MAX_GAPS:
                # Bounded: merge the two oldest gaps. A later resume may then repeat the few events
                # delivered between them (a client that lags this often without resuming).
                (a, _), (_, b) = conn.gaps[0], conn.gaps[1]
                conn.gaps[:2] = [(a, b)]
            conn.gaps.append((int(event.data["first_seq"]), int(event.data["last_seq"])))
        await conn.ws.send(item.payload)

    async def _send_loop(self, conn: _Connection) -> None:
        try:
            while True:
                while not conn.commands.empty():
                    await self._run_command(conn, conn.commands.get_nowait())
                items = conn.sub.take(_SEND_BATCH)
                for item in items:
                    if conn.floor >= 0 and item.event.stream != CONNECTION_STREAM and item.event.seq <= conn.floor:
                        continue
                    await self._send(conn, item)
                if not items and conn.commands.empty():
                    await conn.sub.wait()
        except (ConnectionClosed, asyncio.CancelledError):
            raise
        except Exception:
            logger.exception("websocket sender failed; closing that connection")
            await conn.ws.close(CloseCode.INTERNAL_ERROR, "internal error")

    async def _reply(self, conn: _Connection, kind: str, data: dict[str, Any]) -> None:
        await self._send(conn, Published.of(self.hub.connection_event(kind, data)))

    async def _run_command(self, conn: _Connection, command: ClientMessage | ProtocolError) -> None:
        if isinstance(command, ProtocolError):
            await self._reply(conn, "error", error_data(command.code, command.message))
        elif command.type == "ping":
            await self._reply(conn, "pong", {})
        elif command.type == "subscribe":
            conn.sub.set_streams(command.streams)
        elif command.type == "resume":
            assert command.after_seq is not None
            await self._resume(conn, command.after_seq)
        elif command.type == "name_speaker":
            assert command.stream is not None and command.speaker is not None and command.name is not None
            try:
                if self._name_speaker is None:
                    raise ValueError("this service labels no speakers")
                await self._name_speaker(command.stream, command.speaker, command.name)
            except ValueError as exc:
                await self._reply(conn, "error", {"code": "bad_request", "message": str(exc)})

    async def _resume(self, conn: _Connection, after_seq: int) -> None:
        """Replay the history after ``after_seq``, then rejoin the live flow: no gap, no duplicate.

        The subscription is detached first (its queue is dropped: the history holds those events).
        Then, repeatedly: note the watermark (every event up to it is in the history: the bus logs
        before it publishes, and a gateway publishes what it read from Redis), replay up to it, and
        try :meth:`Hub.go_live`. ``go_live`` is synchronous, so once it succeeds the next published
        event is the first live one.

        A client coming from a gateway that had read further than this one may ask for a seq beyond
        this hub's watermark but not beyond the history's head: it then simply continues live,
        skipping what it already holds.
        """
        last = self.hub.last_seq
        run = self.history.run_id
        if after_seq > (last if last is not None else -1):
            head = await self.history.head_seq()
            if head is None or after_seq > head:
                message = f"after_seq {after_seq} is beyond the last event ({head}) of run {run}; continuing live"
                await self._reply(conn, "error", error_data("resume_unavailable", message))
                return
            conn.floor = after_seq
            conn.new_phase(after_seq, after_seq)
            return
        problem = await self.history.problem(after_seq)
        if problem:
            await self._reply(conn, "error", error_data("resume_unavailable", problem))
        conn.floor = -1
        sub = conn.sub
        sub.detach()
        cursor = after_seq
        replayed = scanned = 0
        while not self.hub.go_live(sub, cursor):
            high = self.hub.last_seq
            assert high is not None
            async for item in self.history.replay(cursor, high):
                event = item.event if isinstance(item, Published) else item
                cursor = event.seq
                # Skip what this connection already delivered (live events that arrived after hello,
                # before this request was read): the client gets each event once.
                if sub.accepts(event.stream) and not conn.has(event.seq):
                    await conn.ws.send(item.payload if isinstance(item, Published) else event.to_json())
                    replayed += 1
                scanned += 1
                if scanned % _REPLAY_YIELD_EVERY == 0:
                    # Sends to a fast reader (or none, when the filter skips everything) never suspend:
                    # without this a long replay would block the event loop for every other client.
                    await asyncio.sleep(0)
            cursor = max(cursor, high)  # events published without being logged are not replayable
        # The client now holds every accepted event in (after_seq, cursor]; live continues from there.
        conn.new_phase(after_seq, max(cursor, after_seq))
        logger.debug("resume after %d: replayed %d events, live from %d", after_seq, replayed, cursor)


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
