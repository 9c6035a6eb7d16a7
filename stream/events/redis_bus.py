"""The event bus on Redis Streams: workers publish, gateways read, and every id lives in Redis.

Keys (``P`` is ``bus.key_prefix``; one Redis primary holds them all):

==========================  ================================================================
``P:run``                   the run id clients see in ``hello`` (set once, kept while Redis keeps data)
``P:seq``                   the counter that gives every logged event its ``seq`` (``INCR``)
``P:events``                every logged event of every stream, entry id ``<seq>-0``: what gateways
                            read (blocking ``XREAD``) and what ``resume`` replays
``P:stream:<id>``           the events of one stream (same ids), bounded by ``MAXLEN ~``
``P:streams`` / ``P:live``  the index: stream id -> JSON info (hash); the ids now running (set)
``P:state:<id>``            a stream's owner (fencing), its resume point and its idempotency token
``P:open:<id>``             keys of the events already published for utterances not yet finished
``P:jobs``                  submitted jobs (a stream, consumer group ``workers``; see ``stream.worker``)
==========================  ================================================================

One Lua script publishes an event atomically: it checks that the caller still owns the stream (a
worker whose job was reclaimed is *fenced* off), drops an event already published for an unfinished
utterance (a reclaimed job re-runs from the end of the last finished utterance), assigns the next
``seq``, appends to both streams, and moves the stream's resume point when an utterance finishes.
Because the entry id *is* the seq, mapping a client's ``resume after_seq`` onto Redis is exact, any
gateway can serve it, and ``seq`` is strictly increasing in ``P:events`` and in every stream.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stream.config import BusConfig
from stream.events.bus import EventBus, Sink
from stream.events.eventlog import new_run_id
from stream.events.hub import Published
from stream.protocol import SERVICE_STREAM, Event

__all__ = [
    "Fenced",
    "Keys",
    "RedisEventBus",
    "RedisHistory",
    "connect",
    "dedup_key",
    "ensure_run_id",
    "retrying",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")
SAMPLE_RATE_HZ: Final = 16000
# Transient failures: Redis restarting, a dropped connection. Everything else is a bug or bad config.
TRANSIENT: Final = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)
# An event that finishes an utterance: after it, the stream's resume point moves past that utterance.
_FINISHING: Final = frozenset({"emotion"})


class Fenced(RuntimeError):
    """This worker no longer owns the stream (its job was reclaimed by another worker)."""


@dataclass(frozen=True, slots=True)
class Keys:
    """Every Redis key name, from ``bus.key_prefix``."""

    prefix: str

    @property
    def run(self) -> str:
        return f"{self.prefix}:run"

    @property
    def seq(self) -> str:
        return f"{self.prefix}:seq"

    @property
    def events(self) -> str:
        return f"{self.prefix}:events"

    @property
    def streams(self) -> str:
        return f"{self.prefix}:streams"

    @property
    def live(self) -> str:
        return f"{self.prefix}:live"

    @property
    def jobs(self) -> str:
        return f"{self.prefix}:jobs"

    @property
    def workers(self) -> str:
        return f"{self.prefix}:workers"

    def stream(self, stream_id: str) -> str:
        return f"{self.prefix}:stream:{stream_id}"

    def state(self, stream_id: str) -> str:
        return f"{self.prefix}:state:{stream_id}"

    def open(self, stream_id: str) -> str:
        return f"{self.prefix}:open:{stream_id}"

    def producer(self, producer_id: str) -> str:
        return f"{self.prefix}:producer:{producer_id}"


def connect(url: str) -> aioredis.Redis:
    """An asyncio client for ``url``. Our own code retries (see :func:`retrying`), never the client:
    a blind client retry of a publish could append an event twice."""
    return aioredis.Redis.from_url(
        url,
        decode_responses=False,
        socket_connect_timeout=2.0,
        socket_timeout=30.0,
        socket_keepalive=True,
        health_check_interval=10,
        retry_on_error=[],
        retry=None,
    )


async def retrying(
    what: str,
    call: Callable[[], Awaitable[T]],
    *,
    max_delay_s: float,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """``await call()`` until it succeeds, backing off from 0.1 s up to ``max_delay_s`` while Redis
    is unreachable (logged once per outage). Other errors propagate."""
    delay = 0.1
    failures = 0
    while True:
        try:
            result = await call()
        except TRANSIENT as exc:
            failures += 1
            if failures == 1:
                logger.warning("Redis unreachable during %s (%s); retrying", what, exc)
            await sleep(delay)
            delay = min(max_delay_s, delay * 2)
            continue
        if failures:
            logger.info("Redis reachable again after %d failed attempt(s) at %s", failures, what)
        return result


async def ensure_run_id(client: aioredis.Redis, keys: Keys) -> str:
    """The deployment's run id (``hello.run_id``), created by whoever asks first."""
    await client.set(keys.run, new_run_id(), nx=True)
    raw = await client.get(keys.run)
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def dedup_key(event_type: str, data: Mapping[str, Any]) -> str:
    """What identifies an utterance's event (``speech:start:ep1-7``); ``""`` for other events."""
    utt = data.get("utterance_id")
    if not isinstance(utt, str) or not utt:
        return ""
    state = data.get("state", "") if event_type == "speech" else ""
    return f"{event_type}:{state}:{utt}"


_PUBLISH_LUA: Final = """
-- KEYS: seq, events, stream, state (or producer), open
-- ARGV: json head, json tail, stream maxlen, events maxlen, owner, token, dedup key,
--       finished utterance id, resume sample, resume s, is end (1/0), finished keys (space separated)
local owner = ARGV[5]
if owner ~= '' then
  local cur = redis.call('HGET', KEYS[4], 'owner')
  if cur ~= owner then return {-1, cur or ''} end
end
local token = ARGV[6]
if redis.call('HGET', KEYS[4], 'last_token') == token then
  return {2, tonumber(redis.call('HGET', KEYS[4], 'last_seq'))}
end
local dkey = ARGV[7]
if dkey ~= '' and redis.call('SISMEMBER', KEYS[5], dkey) == 1 then
  return {0, 0}
end
local seq = redis.call('INCR', KEYS[1])
local id = seq .. '-0'
local json = ARGV[1] .. seq .. ARGV[2]
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], id, 'e', json)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], id, 'e', json)
redis.call('HSET', KEYS[4], 'last_token', token, 'last_seq', seq)
if dkey ~= '' then redis.call('SADD', KEYS[5], dkey) end
if ARGV[8] ~= '' then
  for k in string.gmatch(ARGV[12], '%S+') do redis.call('SREM', KEYS[5], k) end
  local done = tonumber(string.match(ARGV[8], '(%d+)$') or '0')
  if done > tonumber(redis.call('HGET', KEYS[4], 'done_utts') or '0') then
    redis.call('HSET', KEYS[4], 'done_utts', done, 'resume_sample', ARGV[9], 'resume_s', ARGV[10])
  end
end
if ARGV[11] == '1' then redis.call('HSET', KEYS[4], 'ended', '1') end
return {1, seq}
"""


def _split_json(event: Event) -> tuple[str, str]:
    """The event's JSON around its seq, so the script can put the seq in without re-encoding."""
    text = Event(event.type, 0, event.stream, event.ts, event.data).to_json()
    marker = ',"seq":0,"stream":'
    at = text.index(marker) + len(',"seq":')
    return text[:at], text[at + 1 :]


class RedisEventBus(EventBus):
    """An :class:`EventBus` whose ``seq`` comes from Redis: :meth:`emit` appends to ``P:events`` and
    ``P:stream:<id>`` (one atomic script) and then hands the event to local ``sinks``.

    ``owner`` (a worker's job token) fences the streams: once another worker has taken them over, an
    emit raises :class:`Fenced`. Emits are serialised (FIFO) so events keep the order the pipeline
    made them in, and each carries a token, so a retry after a lost reply never appends twice.
    While Redis is unreachable, :meth:`emit` waits (retrying) -- the pipeline is back-pressured.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        config: BusConfig,
        *,
        owner: str = "",
        producer_id: str | None = None,
        sinks: tuple[Sink, ...] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(sinks, clock=clock)
        self._client = client
        self._config = config
        self.keys = Keys(config.key_prefix)
        self._owner = owner
        self.producer_id = producer_id or secrets.token_hex(6)
        self._script = client.register_script(_PUBLISH_LUA)
        self._lock = asyncio.Lock()
        self._tokens = 0
        self._last_seq = 0
        self.skipped_duplicates = 0

    @property
    def last_seq(self) -> int:
        return self._last_seq

    def emit_nowait(self, type: str, stream: str, data: Mapping[str, Any]) -> Event:
        raise RuntimeError("RedisEventBus publishes over the network: use `await bus.emit(...)`")

    async def emit(self, type: str, stream: str, data: Mapping[str, Any]) -> Event:
        async with self._lock:
            event = Event(type=type, seq=0, stream=stream, ts=round(self._clock(), 6), data=dict(data))
            self._tokens += 1
            token = f"{self.producer_id}:{self._tokens}"
            seq = await retrying(
                f"publishing {type} on {stream}",
                lambda: self._publish(event, token),
                max_delay_s=self._config.reconnect_max_s,
            )
            if seq is None:
                self.skipped_duplicates += 1
                return Event(type, -1, stream, event.ts, event.data)
            event = Event(type, seq, stream, event.ts, event.data)
            self._last_seq = seq
            self.counts[type] = self.counts.get(type, 0) + 1
            for sink in self._sinks:
                try:
                    sink(event)
                except Exception:
                    name = getattr(sink, "__qualname__", type)
                    self.sink_errors[name] = self.sink_errors.get(name, 0) + 1
                    logger.exception("event sink %s failed on %s #%d", name, type, seq)
            return event

    async def _publish(self, event: Event, token: str) -> int | None:
        k, stream, data = self.keys, event.stream, event.data
        service = stream == SERVICE_STREAM
        state = k.producer(self.producer_id) if service else k.state(stream)
        dkey = "" if service else dedup_key(event.type, data)
        finished = resume_sample = resume_s = finished_keys = ""
        utt = data.get("utterance_id")
        if not service and event.type in _FINISHING and isinstance(utt, str):
            end_s = float(data.get("end_s", 0.0))
            finished, resume_sample, resume_s = utt, str(round(end_s * SAMPLE_RATE_HZ)), repr(end_s)
            finished_keys = " ".join(
                f"{t}:{s}:{utt}"
                for t, s in (("speech", "start"), ("speech", "end"), ("transcript", ""), ("emotion", ""))
            )
        head, tail = _split_json(event)
        args: list[Any] = [
            head,
            tail,
            self._config.stream_maxlen_events,
            self._config.firehose_maxlen_events,
            "" if service else self._owner,
            token,
            dkey,
            finished,
            resume_sample,
            resume_s,
            "1" if event.type == "end" else "0",
            finished_keys,
        ]
        code, value = await self._script(keys=[k.seq, k.events, k.stream(stream), state, k.open(stream)], args=args)
        if int(code) == -1:
            holder = value.decode() if isinstance(value, bytes) else str(value)
            raise Fenced(f"stream {stream} is now owned by {holder or 'nobody'}; this worker stops it")
        if int(code) == 0:
            return None
        return int(value)


# ------------------------------------------------------------------------------------- reading


def parse_entry(fields: Mapping[Any, Any]) -> Published:
    """A Redis stream entry -> the event and its exact JSON text (shared by every subscriber)."""
    text = fields[b"e"].decode("utf-8")
    return Published(Event.from_dict(json.loads(text)), text)


def entry_seq(entry_id: Any) -> int:
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(raw.partition("-")[0])


class RedisHistory:
    """What a gateway's :class:`stream.server.Server` replays for ``resume``: ``P:events``."""

    def __init__(self, client: aioredis.Redis, config: BusConfig, run_id: str, *, page: int = 500) -> None:
        self._client = client
        self._config = config
        self.keys = Keys(config.key_prefix)
        self.run_id = run_id
        self._page = page

    async def head_seq(self) -> int | None:
        """The newest seq in Redis (``None`` before the first event)."""
        raw = await retrying("reading the seq counter", lambda: self._client.get(self.keys.seq),
                             max_delay_s=self._config.reconnect_max_s)  # fmt: skip
        return None if raw is None else int(raw)

    async def problem(self, after_seq: int) -> str | None:
        """Why a replay after ``after_seq`` would miss events (trimmed by retention), or ``None``."""
        first: Any = await retrying("reading the oldest event", lambda: self._client.xrange(self.keys.events, count=1),
                               max_delay_s=self._config.reconnect_max_s)  # fmt: skip
        if first and entry_seq(first[0][0]) > after_seq + 1:
            oldest = entry_seq(first[0][0])
            return (
                f"events {after_seq + 1}..{oldest - 1} are past the retention window "
                f"(bus.firehose_maxlen_events = {self._config.firehose_maxlen_events}); replaying from {oldest}"
            )
        return None

    async def _xrange(self, low: str, high: str) -> Any:
        return await self._client.xrange(self.keys.events, min=low, max=high, count=self._page)

    async def replay(self, after_seq: int, upto_seq: int) -> AsyncIterator[Event | Published]:
        """Every stored event with ``after_seq < seq <= upto_seq``, in order, a page at a time."""
        start = f"{after_seq + 1}-0"
        while True:
            page: Any = await retrying(
                "replaying events",
                lambda s=start: self._xrange(s, f"{upto_seq}-0"),  # type: ignore[misc]
                max_delay_s=self._config.reconnect_max_s,
            )
            for _entry_id, fields in page:
                yield parse_entry(fields)
            if len(page) < self._page:
                return
            start = f"{entry_seq(page[-1][0]) + 1}-0"


async def read_index(client: aioredis.Redis, keys: Keys) -> list[dict[str, Any]]:
    """The live streams for ``hello``: ``[{"id", "kind", "name"}, ...]`` in id order."""
    members: Any = await client.smembers(keys.live)
    live = sorted(m.decode() for m in members)
    if not live:
        return []
    infos = await client.hmget(keys.streams, live)
    out = []
    for stream_id, raw in zip(live, infos, strict=True):
        info = json.loads(raw) if raw else {}
        out.append({"id": stream_id, "kind": info.get("kind", "file"), "name": info.get("name", stream_id)})
    return out
