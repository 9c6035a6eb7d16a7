"""Redis alone (``python -m bench.scale --publish-only N``): how fast one Redis primary takes events.

``producers`` publishers append emotion-sized events through the bus's publish script, with no
appendonly file, then fsync every second, then on every write; Redis CPU per event bounds one primary.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import markdown_table, write_result
from bench.procs import Procs, start_redis, wait_port

__all__ = ["publish_only", "publish_rate"]


async def publish_rate(events: int, producers: int, folder: Path, *, aof: str) -> dict[str, Any]:
    """Redis alone: ``producers`` publishers (one stream each, awaiting every publish as a worker does)
    append ``events`` emotion-sized events through the publish script. Redis CPU per event is what
    bounds one Redis primary."""
    import psutil

    from stream.config import BusConfig
    from stream.events.redis_bus import RedisEventBus, connect

    os.makedirs(folder, exist_ok=True)  # noqa: ASYNC230 - once, before anything runs
    procs = Procs(folder)
    port, server = start_redis(procs, folder, aof)
    try:
        await wait_port(port, procs.check_alive)
        url = f"redis://127.0.0.1:{port}/0"
        config = BusConfig(url=url)
        client = connect(url)
        from stream.protocol import LABELS

        data = {"utterance_id": "s-1", "start_s": 12.41, "end_s": 14.9, "label": "joy", "modalities": ["text", "audio"],
                "text": "Well, I guess that is the last time we ever let Joey choose the restaurant.",
                "scores": {lab: 0.142857 for lab in LABELS}, "latency_ms": 412.5}  # fmt: skip
        per = events // producers

        async def produce(k: int) -> None:
            bus = RedisEventBus(client, config, producer_id=f"p{k}")
            for i in range(per):
                await bus.emit("emotion", f"s{k}", {**data, "utterance_id": f"s{k}-{i}"})

        redis_proc = psutil.Process(server.pid)
        me = psutil.Process()
        r0, m0, t0 = redis_proc.cpu_times(), me.cpu_times(), time.monotonic()
        await asyncio.gather(*(produce(k) for k in range(producers)))
        wall = time.monotonic() - t0
        r1, m1 = redis_proc.cpu_times(), me.cpu_times()
        info = await client.info("memory")
        await client.aclose()
    finally:
        procs.stop_all()
    n = per * producers
    redis_cpu = (r1.user + r1.system) - (r0.user + r0.system)
    return {
        "events": n,
        "producers": producers,
        "appendfsync": aof,
        "events_per_s": round(n / wall, 1),
        "redis_cpu_us_per_event": round(1e6 * redis_cpu / n, 1),
        "redis_cpu_percent_of_one_core": round(100 * redis_cpu / wall, 1),
        "publisher_cpu_us_per_event": round(1e6 * ((m1.user + m1.system) - (m0.user + m0.system)) / n, 1),
        "used_memory_mb": round(int(info["used_memory"]) / 2**20, 2),
        "memory_bytes_per_event": round(int(info["used_memory"]) / n, 1),
    }


def publish_only(events: int, producers: int, out: str) -> int:
    """``publish_rate`` under each ``appendfsync`` setting; prints the table and writes ``<out>-redis``."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="emostream-redis-") as tmp:
        for mode in ("none", "everysec", "always"):
            rows.append(asyncio.run(publish_rate(events, producers, Path(tmp) / mode, aof=mode)))
    table = markdown_table(rows)
    print(table)
    print(f"written {write_result(out + '-redis', {'results': rows, 'table': table})}")
    return 0
