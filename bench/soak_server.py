"""The server side of ``bench.soak``: the real :class:`stream.server.Server` publishing at a steady rate.

Run in its own process (``python -m bench.soak --serve``) so the clients' CPU does not blur its
figures: it prints ``PORT N``, publishes until a line arrives on stdin, waits for every client to
leave, then prints its report (one JSON line): CPU, memory, event-loop blocking, leftovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["HOST", "STREAM", "serve"]

HOST = "127.0.0.1"
STREAM = "soak"


@dataclass(slots=True)
class _Watch:
    """What the server process watches while it runs: event-loop blocking and samples of its load."""

    samples: list[dict[str, float]] = field(default_factory=list)
    max_lag_s: float = 0.0

    async def ticker(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            self.max_lag_s = max(self.max_lag_s, now - last - 0.01)
            last = now

    async def sampler(self, proc: Any, server: Any, hub: Any) -> None:
        t0 = time.monotonic()
        while True:
            self.samples.append({
                "t_s": round(time.monotonic() - t0, 2),
                "rss_mb": round(proc.memory_info().rss / 2**20, 1),
                "connections": server.connections,
                "subscribers": hub.stats().subscribers,
            })  # fmt: skip
            await asyncio.sleep(0.25)


async def serve(rate: float, log_dir: Path, max_message_bytes: int, ping_s: float) -> dict[str, Any]:
    """Serve and publish ``rate`` events/s until stdin says stop; the report once every client has left."""
    import psutil

    from stream.config import ServerConfig
    from stream.events.bus import EventBus
    from stream.events.eventlog import EventLog
    from stream.events.hub import Hub
    from stream.server import Server

    cfg = ServerConfig(
        host=HOST, port=0, max_message_bytes=max_message_bytes, ping_interval_s=ping_s, ping_timeout_s=ping_s
    )
    hub = Hub(queue_events=cfg.subscriber_queue_events)
    proc = psutil.Process()
    watch = _Watch()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def wait_stdin() -> None:
        sys.stdin.readline()  # the driver writes a line (or closes the pipe) when its clients are done
        loop.call_soon_threadsafe(stop.set)

    with EventLog(log_dir) as event_log:
        bus = EventBus([event_log.append, hub.publish])
        async with Server(cfg, hub, event_log, hello=lambda: {"streams": [{"id": STREAM}]}) as server:
            print(f"PORT {server.port}", flush=True)
            tasks = [asyncio.create_task(watch.ticker()), asyncio.create_task(watch.sampler(proc, server, hub))]
            loop.run_in_executor(None, wait_stdin)
            cpu0, t0 = proc.cpu_times(), time.monotonic()
            rss0 = proc.memory_info().rss
            n = await _publish(bus, rate, stop)
            cpu1, t1 = proc.cpu_times(), time.monotonic()
            at_stop = server.connections
            # Everyone has left: give the server a moment to notice, then look for leftovers.
            deadline = time.monotonic() + 10
            while (server.connections or hub.stats().subscribers) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            for t in tasks:
                t.cancel()
            samples = watch.samples
            return {
                "events": n,
                "wall_s": round(t1 - t0, 2),
                "cpu_percent_of_one_core": round(
                    100 * ((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)) / max(t1 - t0, 1e-9), 1
                ),
                "rss_start_mb": round(rss0 / 2**20, 1),
                "rss_peak_mb": max((s["rss_mb"] for s in samples), default=0.0),
                "rss_end_mb": round(proc.memory_info().rss / 2**20, 1),
                "max_connections_seen": max((int(s["connections"]) for s in samples), default=0),
                "connections_at_stop": at_stop,  # before the clients left: never-readers already dropped?
                "connections_left": server.connections,
                "subscribers_left": hub.stats().subscribers,
                "refused": server.refused,
                "hub": hub.stats().to_dict(),
                "max_loop_lag_ms": round(watch.max_lag_s * 1000, 1),
                "log_bytes": event_log.path.stat().st_size,
                "samples": samples[:: max(1, len(samples) // 120)],
            }


async def _publish(bus: Any, rate: float, stop: asyncio.Event) -> int:
    """``emotion`` events at ``rate`` per second until ``stop``; returns how many."""
    t0 = time.monotonic()
    n = 0
    while not stop.is_set():
        await bus.emit("emotion", STREAM, {"utterance_id": f"{STREAM}-{n}", "label": "joy", "text": "soak"})
        n += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, t0 + n / rate - time.monotonic()))
    return n
