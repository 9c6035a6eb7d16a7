"""Replay jobs on Redis: ``emostream submit`` queues them, workers take them through a consumer group.

A job is one entry of ``P:jobs`` (``stream``, ``path``, ``name``); workers read it with
``XREADGROUP`` (group ``workers``), keep it pending while they run it, and acknowledge it once the
stream's ``end`` is published. A running worker refreshes its claim every third of
``bus.claim_timeout_s``; a job pending longer than that without a refresh belongs to a dead worker and
is taken over with ``XAUTOCLAIM`` by the next idle worker, which also becomes the stream's *owner*
(``P:state:<id>``): the dead-or-stalled worker's later publishes are refused (fencing). The new owner
restarts the replay at the stream's resume point (the end of the last finished utterance, recorded by
the publish script) and continues the utterance numbering, so its events continue the same stream.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from stream.config import BusConfig
from stream.events.redis_bus import Keys

__all__ = ["GROUP", "Job", "JobQueue", "Taken", "slug"]

GROUP: Final = "workers"

_TAKE_LUA: Final = """
-- KEYS: state, streams, live   ARGV: owner, stream id, info json
redis.call('HSET', KEYS[1], 'owner', ARGV[1])
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[2])
local st = redis.call('HMGET', KEYS[1], 'done_utts', 'resume_sample', 'ended')
return {attempts, st[1] or '0', st[2] or '0', st[3] or '0'}
"""

_HEARTBEAT_LUA: Final = """
-- KEYS: state, jobs   ARGV: owner, group, consumer, entry id
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('XCLAIM', KEYS[2], ARGV[2], ARGV[3], 0, ARGV[4], 'JUSTID')
return 1
"""

_FINISH_LUA: Final = """
-- KEYS: state, jobs, live, streams, stream, open   ARGV: owner, group, entry id, stream id, ttl, info json
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('XACK', KEYS[2], ARGV[2], ARGV[3])
redis.call('XDEL', KEYS[2], ARGV[3])
redis.call('SREM', KEYS[3], ARGV[4])
redis.call('HSET', KEYS[4], ARGV[4], ARGV[6])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[5], ARGV[5])
redis.call('EXPIRE', KEYS[6], ARGV[5])
return 1
"""

_RELEASE_LUA: Final = """
-- KEYS: state, jobs   ARGV: owner, group, entry id, stream id, path, name
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'owner', '')
redis.call('HINCRBY', KEYS[1], 'attempts', -1)  -- a hand-over is not a failed attempt
redis.call('XADD', KEYS[2], '*', 'stream', ARGV[4], 'path', ARGV[5], 'name', ARGV[6])
redis.call('XACK', KEYS[2], ARGV[2], ARGV[3])
redis.call('XDEL', KEYS[2], ARGV[3])
return 1
"""


def slug(text: str) -> str:
    """A stream id made from a name or file stem (letters, digits, ``_ . -``; at most 64)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")[:64] or "stream"


def _check_media(path: str | Path) -> Path:
    media = Path(path).expanduser().absolute()
    if not media.is_file():
        raise FileNotFoundError(f"no such media file: {path}")
    return media


@dataclass(frozen=True, slots=True)
class Job:
    """One submitted replay: ``entry_id`` in ``P:jobs``, the stream it feeds, the media file."""

    entry_id: str
    stream: str
    path: str
    name: str
    reclaimed: bool = False


@dataclass(frozen=True, slots=True)
class Taken:
    """What a worker learns when it takes a job: where the stream stands."""

    attempts: int
    done_utterances: int  # utterances whose events are all published (the numbering continues after)
    resume_sample: int  # the replay restarts here (the end of the last finished utterance)
    ended: bool  # the stream's `end` was already published: only the acknowledgement is missing


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class JobQueue:
    """The jobs stream and its consumer group, seen by one worker (``consumer``) or by ``submit``."""

    def __init__(self, client: aioredis.Redis, config: BusConfig, consumer: str = "") -> None:
        self._client = client
        self._config = config
        self.keys = Keys(config.key_prefix)
        self.consumer = consumer
        self._take = client.register_script(_TAKE_LUA)
        self._heartbeat = client.register_script(_HEARTBEAT_LUA)
        self._finish = client.register_script(_FINISH_LUA)
        self._release = client.register_script(_RELEASE_LUA)

    async def ensure_group(self) -> None:
        """Create the consumer group (from the first entry, so no job submitted before is missed)."""
        try:
            await self._client.xgroup_create(self.keys.jobs, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def submit(self, path: str | Path, name: str | None = None) -> Job:
        """Queue a replay of ``path`` (which every worker must be able to read) as a new stream."""
        media = _check_media(path)
        await self.ensure_group()
        base = slug(name or media.stem)
        info = {"kind": "file", "name": media.name, "path": str(media), "state": "queued", "submitted": time.time()}
        stream, n = base, 2
        # The id must be new: an old stream's events would otherwise be continued or de-duplicated.
        while stream.startswith("_") or not await self._client.hsetnx(self.keys.streams, stream, json.dumps(info)):
            stream, n = f"{base}-{n}", n + 1
        entry = await self._client.xadd(self.keys.jobs, {"stream": stream, "path": str(media), "name": media.name})
        return Job(_text(entry), stream, str(media), media.name)

    async def next_job(self, block_ms: int) -> Job | None:
        """A dead worker's job (pending longer than ``claim_timeout_s``) or else a new one."""
        claimed: Any = await self._client.xautoclaim(
            self.keys.jobs, GROUP, self.consumer, min_idle_time=round(self._config.claim_timeout_s * 1000), count=1
        )
        entries = claimed[1] if len(claimed) > 1 else []
        for entry_id, fields in entries:
            if fields:
                return self._job(entry_id, fields, reclaimed=True)
        reply: Any = await self._client.xreadgroup(GROUP, self.consumer, {self.keys.jobs: ">"}, count=1, block=block_ms)
        for _key, items in reply or []:
            for entry_id, fields in items:
                if fields:
                    return self._job(entry_id, fields, reclaimed=False)
        return None

    async def pending(self) -> int:
        """Jobs taken by some worker and not yet acknowledged (a dead worker's included)."""
        info: Any = await self._client.xpending(self.keys.jobs, GROUP)
        return int(info.get("pending", 0) if isinstance(info, dict) else info[0])

    @staticmethod
    def _job(entry_id: Any, fields: Mapping[Any, Any], *, reclaimed: bool) -> Job:
        f = {_text(k): _text(v) for k, v in fields.items()}
        return Job(_text(entry_id), f.get("stream", ""), f.get("path", ""), f.get("name", ""), reclaimed)

    async def take(self, job: Job, owner: str) -> Taken:
        """Become the stream's owner (fencing any earlier one) and read its resume point."""
        k = self.keys
        info = json.dumps({"kind": "file", "name": job.name, "path": job.path, "state": "live", "worker": owner})
        attempts, done, sample, ended = await self._take(keys=[k.state(job.stream), k.streams, k.live],
                                                         args=[owner, job.stream, info])  # fmt: skip
        return Taken(int(attempts), int(done), int(sample), _text(ended) == "1")

    async def heartbeat(self, job: Job, owner: str) -> bool:
        """Refresh the claim (resets its idle time); ``False`` once another worker owns the stream."""
        ok = await self._heartbeat(keys=[self.keys.state(job.stream), self.keys.jobs],
                                   args=[owner, GROUP, self.consumer, job.entry_id])  # fmt: skip
        return bool(int(ok))

    async def finish(self, job: Job, owner: str, reason: str) -> bool:
        """Acknowledge the job, take the stream off the live index and let its keys expire."""
        k = self.keys
        info = json.dumps({"kind": "file", "name": job.name, "path": job.path, "state": "ended", "reason": reason})
        ok = await self._finish(
            keys=[k.state(job.stream), k.jobs, k.live, k.streams, k.stream(job.stream), k.open(job.stream)],
            args=[owner, GROUP, job.entry_id, job.stream, self._config.ended_stream_ttl_s, info],
        )
        return bool(int(ok))

    async def release(self, job: Job, owner: str) -> bool:
        """Give a running job back (a worker shutting down): queued again at once, for any worker."""
        ok = await self._release(keys=[self.keys.state(job.stream), self.keys.jobs],
                                 args=[owner, GROUP, job.entry_id, job.stream, job.path, job.name])  # fmt: skip
        return bool(int(ok))
