"""``emostream gateway``: the dashboard and the websocket protocol, fed from Redis Streams.

One task reads ``P:events`` with a blocking ``XREAD`` from the last seq it has, and publishes each
event to a local :class:`stream.events.hub.Hub` (the same bounded per-client queues as
``emostream run``); :class:`stream.server.Server` serves clients from it, and ``resume`` replays from
Redis (:class:`stream.events.redis_bus.RedisHistory`). A gateway holds nothing Redis lacks: the run
id, the seqs and the events all come from Redis, so a client can reconnect to any gateway and
``resume`` with no gap and no duplicate.

While Redis is unreachable the gateway keeps its clients and retries; it continues from the seq it
had. It stops between two reads (within ``bus.read_block_ms``), never by cancelling a Redis command in
flight: redis-py's asyncio client can hang on a cancelled blocking command (redis/redis-py#2579).

If Redis comes back *without* its data (a new run id: no persistence), the seqs start over, so the
gateway closes its clients (they reconnect and see the new run) and exits with status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from stream.config import Config
from stream.events.hub import Hub
from stream.events.redis_bus import (
    TRANSIENT,
    Keys,
    RedisHistory,
    connect,
    ensure_run_id,
    entry_seq,
    parse_entry,
    read_index,
    retrying,
)
from stream.protocol import LABEL_COLORS, LABELS

__all__ = ["Gateway", "RunLost", "gateway_from_cli", "run_gateway"]

logger = logging.getLogger(__name__)

_READ_COUNT = 1000  # events per XREAD reply
_INDEX_EVERY_S = 2.0  # how often the live-stream index (for `hello`) is refreshed


class RunLost(RuntimeError):
    """Redis came back with a different run id: its data (and the seqs) are gone."""


class Gateway:
    """Reads Redis into a hub; the :class:`stream.server.Server` around it does the rest."""

    def __init__(self, config: Config, client: aioredis.Redis, run_id: str) -> None:
        self.config = config
        self.client = client
        self.run_id = run_id
        self.keys = Keys(config.bus.key_prefix)
        self.hub = Hub(queue_events=config.server.subscriber_queue_events)
        self.history = RedisHistory(client, config.bus, run_id)
        self.streams: list[dict[str, Any]] = []
        self.model_ids: dict[str, str] = {}
        self.labels: list[str] = list(LABELS)
        self.read_events = 0
        self.missed_events = 0  # seqs skipped because they were trimmed before this gateway read them
        self.stopping = asyncio.Event()  # set: the loops return after the Redis command they are in

    def hello(self) -> dict[str, Any]:
        return {"labels": self.labels, "colors": dict(LABEL_COLORS), "streams": self.streams,
                "model_ids": self.model_ids}  # fmt: skip

    async def start(self) -> None:
        """Begin live at the newest seq: older events are for ``resume``."""
        head = await self.history.head_seq()
        if head is not None:
            self.hub.advance(head)
        await self.refresh_index()

    async def refresh_index(self) -> None:
        self.streams = await read_index(self.client, self.keys)
        workers = await self.client.hvals(self.keys.workers)
        for raw in workers[:1]:
            info = json.loads(raw)
            self.model_ids = dict(info.get("model_ids", {}))
            self.labels = list(info.get("labels", self.labels))

    async def read_loop(self) -> None:
        """XREAD from the last seq this gateway has until :attr:`stopping`; publish to the hub in seq order."""
        cfg = self.config.bus
        delay = 0.1
        while not self.stopping.is_set():
            last = self.hub.last_seq or 0
            try:
                reply: Any = await self.client.xread({self.keys.events: f"{last}-0"}, count=_READ_COUNT,
                                                block=cfg.read_block_ms)  # fmt: skip
            except TRANSIENT as exc:
                logger.warning("reading Redis failed (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(cfg.reconnect_max_s, delay * 2)
                await self._check_run()
                continue
            delay = 0.1
            for _key, entries in reply or []:
                for entry_id, fields in entries:
                    seq = entry_seq(entry_id)
                    if seq > last + 1:
                        self.missed_events += seq - last - 1
                        logger.warning("events %d..%d were trimmed before this gateway read them", last + 1, seq - 1)
                    item = parse_entry(fields)
                    self.hub.publish(item.event, item.payload)
                    self.read_events += 1
                    last = seq

    async def _check_run(self) -> None:
        with contextlib.suppress(*TRANSIENT):
            run = await ensure_run_id(self.client, self.keys)
            if run != self.run_id:
                raise RunLost(f"Redis has a new run id {run} (was {self.run_id}): its data are gone")

    async def index_loop(self) -> None:
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), _INDEX_EVERY_S)
                return
            with contextlib.suppress(*TRANSIENT):
                await self.refresh_index()


async def run_gateway(
    config: Config,
    *,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[Any], None] | None = None,
) -> int:
    """Serve until SIGINT/SIGTERM (or ``stop``); returns the exit status."""
    from stream.server import Server

    if not config.bus.url:
        logger.error("emostream gateway needs --bus redis://HOST:PORT/DB (or bus.url in the config)")
        return 2
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    client = connect(config.bus.url)
    try:
        keys = Keys(config.bus.key_prefix)
        run_id = await retrying("connecting", lambda: ensure_run_id(client, keys),
                                max_delay_s=config.bus.reconnect_max_s)  # fmt: skip
        gateway = Gateway(config, client, run_id)
        await retrying("reading the index", gateway.start, max_delay_s=config.bus.reconnect_max_s)
        async with Server(config.server, gateway.hub, gateway.history, gateway.hello) as server:
            logger.info("gateway on %s for %s (run %s)", server.ws_url, config.bus.url, run_id)
            reader = asyncio.create_task(gateway.read_loop(), name="redis-read")
            index = asyncio.create_task(gateway.index_loop(), name="redis-index")
            stopper = asyncio.create_task(stop.wait())
            if on_ready is not None:
                on_ready(server)
            await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
            gateway.stopping.set()
            stopper.cancel()
            # Let the loops finish the command they are in (XREAD returns within read_block_ms);
            # cancel only what is still stuck after that (Redis unreachable, a retry sleep).
            await asyncio.wait({reader, index}, timeout=config.bus.read_block_ms / 1000 + 2.0)
            for task in (reader, index):
                task.cancel()
            status = 0
            if reader.done() and not reader.cancelled() and reader.exception() is not None:
                logger.error("gateway stops: %s", reader.exception())
                status = 1
            tasks: tuple[asyncio.Task[Any], ...] = (reader, index, stopper)
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            return status
    finally:
        await client.aclose()


def gateway_from_cli(config: Config, args: argparse.Namespace) -> int:
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run_gateway(config))
    return 0
