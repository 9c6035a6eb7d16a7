"""Fan-out: how fast events reach 10 / 100 / 1,000 websocket subscribers, and what it costs the server.

The server runs in its own process (so its CPU is measured apart from the clients'): the real
:class:`stream.server.Server` with a :class:`stream.events.hub.Hub` and the JSONL
:class:`stream.events.eventlog.EventLog`, fed by a :class:`stream.events.bus.EventBus`
that emits ``emotion`` events shaped like the pipeline's at a
fixed rate. The clients (real ``websockets`` connections on 127.0.0.1 only) run in this process and
record ``receive time - event ts`` for every event. Both share the machine's cores, which is stated
in the result. Every run is bounded: ``--duration`` seconds of publishing plus timeouts on connecting
and draining.

Usage: ``python -m bench.fanout [--clients 10,100,1000] [--rate 10] [--duration 8]``; ``--full`` runs
30 s per size.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import REPO, markdown_table, setup_logging, summarize, write_result

logger = logging.getLogger(__name__)

STREAM = "bench"
CONNECT_BATCH = 50
SERVER_READY_TIMEOUT_S = 30.0


# --------------------------------------------------------------------------- server process


def _emotion_data(n: int) -> dict[str, Any]:
    from stream.protocol import LABELS

    scores = dict.fromkeys(LABELS, 0.05)
    scores["neutral"] = 0.7
    return {
        "utterance_id": f"{STREAM}-{n}",
        "start_s": 2.0 * n,
        "end_s": 2.0 * n + 1.5,
        "text": "Well, I guess that is the last time we ever let Joey choose the restaurant.",
        "label": "neutral",
        "scores": scores,
        "modalities": ["text", "audio"],
        "latency_ms": 420.0,
    }


async def _serve(expect: int, rate: float, duration_s: float, log_dir: Path) -> dict[str, Any]:
    import psutil

    from stream.config import ServerConfig
    from stream.events.bus import EventBus
    from stream.events.eventlog import EventLog
    from stream.events.hub import Hub
    from stream.server import Server

    cfg = ServerConfig(host="127.0.0.1", port=0, max_connections=max(2000, expect + 10))
    hub = Hub(queue_events=cfg.subscriber_queue_events)
    with EventLog(log_dir) as event_log:
        bus = EventBus([event_log.append, hub.publish])
        async with Server(cfg, hub, event_log, hello=lambda: {"streams": [STREAM]}) as server:
            print(f"PORT {server.port}", flush=True)
            deadline = time.monotonic() + SERVER_READY_TIMEOUT_S + expect * 0.05
            # Server and Hub expose counters, not events, so poll them (bounded by the deadlines).
            while server.connections < expect and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            connected = server.connections
            proc = psutil.Process()
            cpu0, t0 = proc.cpu_times(), time.monotonic()
            n = 0
            while time.monotonic() - t0 < duration_s:
                await bus.emit("emotion", STREAM, _emotion_data(n))
                n += 1
                await asyncio.sleep(max(0.0, t0 + n / rate - time.monotonic()))
            await bus.emit("end", STREAM, {"reason": "bench done"})
            # Let the senders drain before measuring (bounded: at most 10 s).
            drain_deadline = time.monotonic() + 10.0
            while hub.stats().max_queue_depth and time.monotonic() < drain_deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            cpu1, t1 = proc.cpu_times(), time.monotonic()
            stats = hub.stats().to_dict()
            rss = proc.memory_info().rss
            await asyncio.sleep(0.5)  # clients close on `end`
    busy = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return {
        "connected": connected,
        "events": n,
        "wall_s": round(t1 - t0, 3),
        "cpu_s": round(busy, 3),
        "cpu_percent_of_one_core": round(100 * busy / (t1 - t0), 1),
        "rss_mb": round(rss / 2**20, 1),
        "hub": stats,
    }


# --------------------------------------------------------------------------- clients


async def _client(url: str, latencies: list[float], counts: dict[str, int], done: asyncio.Event) -> None:
    from websockets.asyncio.client import connect

    # Stamp arrivals now and parse later: one process reads for all N subscribers, so parsing inside
    # the loop would delay the later readers and be counted as the server's delivery time.
    got: list[tuple[float, str | bytes]] = []
    async with connect(url, max_size=2**20, open_timeout=60, ping_interval=None) as ws:
        counts["connected"] += 1
        async for raw in ws:
            got.append((time.time(), raw))
            if (isinstance(raw, str) and '"type":"end"' in raw) or done.is_set():
                break
    for arrival, raw in got:
        event = json.loads(raw)
        if event.get("type") == "emotion":
            latencies.append(arrival - event["ts"])
        elif event.get("type") == "lagged":
            counts["lagged"] += 1


async def _run_clients(url: str, n: int, timeout_s: float) -> tuple[list[float], dict[str, int], str | None]:
    latencies: list[float] = []
    counts = {"connected": 0, "lagged": 0, "failed": 0}
    done = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    for start in range(0, n, CONNECT_BATCH):
        for _ in range(min(CONNECT_BATCH, n - start)):
            tasks.append(asyncio.create_task(_client(url, latencies, counts, done)))
        await asyncio.sleep(0.05)  # a gentle ramp: the listen backlog is finite
    finished, pending = await asyncio.wait(tasks, timeout=timeout_s)
    error = None
    for t in finished:
        if t.exception() is not None:
            counts["failed"] += 1
            error = error or f"{type(t.exception()).__name__}: {t.exception()}"
    if pending:
        done.set()
        for t in pending:
            t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*pending, return_exceptions=True)
        error = error or f"{len(pending)} clients still reading after {timeout_s:.0f} s"
    return latencies, counts, error


def run_size(n: int, *, rate: float, duration_s: float) -> dict[str, Any]:
    """One server process, ``n`` clients, ``duration_s`` of events at ``rate`` per second."""
    import psutil

    with tempfile.TemporaryDirectory(prefix="emostream-fanout-") as tmp:
        cmd = [sys.executable, "-m", "bench.fanout", "--serve", "--expect", str(n), "--rate", str(rate),
               "--duration", str(duration_s), "--log-dir", tmp]  # fmt: skip
        server = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            line = server.stdout.readline().strip()
            if not line.startswith("PORT "):
                raise RuntimeError(f"the fan-out server did not start (said {line!r})")
            url = f"ws://127.0.0.1:{int(line.split()[1])}/ws"
            me = psutil.Process()
            cpu0 = me.cpu_times()
            timeout = SERVER_READY_TIMEOUT_S + n * 0.05 + duration_s + 30
            latencies, counts, error = asyncio.run(_run_clients(url, n, timeout))
            cpu1 = me.cpu_times()
            out, _ = server.communicate(timeout=60)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
    server_report = json.loads(out.strip().splitlines()[-1])
    expected = server_report["events"] * n
    ms = [1000 * v for v in latencies]
    s = summarize(ms, digits=2)
    return {
        "subscribers": n,
        "connected": counts["connected"],
        "events_published": server_report["events"],
        "deliveries": len(ms),
        "delivered_fraction": round(len(ms) / expected, 4) if expected else None,
        "lagged_notices": counts["lagged"],
        "failed_clients": counts["failed"],
        "delivery_ms": s,
        "server_cpu_percent_of_one_core": server_report["cpu_percent_of_one_core"],
        "server_rss_mb": server_report["rss_mb"],
        "client_cpu_s": round((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system), 2),
        "server": server_report,
        "error": error,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", default="10,100,1000", help="comma-separated subscriber counts")
    p.add_argument("--rate", type=float, default=10.0, help="events per second published (default 10)")
    p.add_argument("--duration", type=float, default=8.0, help="seconds of publishing per size (default 8)")
    p.add_argument("--full", action="store_true", help="30 s per size")
    p.add_argument("--out", default="fanout", help="result name under bench/results/")
    # The server role (started by the benchmark itself).
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--expect", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--log-dir", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        logging.basicConfig(level=logging.WARNING)
        report = asyncio.run(_serve(args.expect, args.rate, args.duration, args.log_dir))
        print(json.dumps(report), flush=True)
        return 0
    setup_logging()
    duration = 30.0 if args.full else args.duration
    sizes = [int(x) for x in args.clients.split(",") if x.strip()]
    rows, results = [], []
    for n in sizes:
        logger.info("fan-out: %d subscribers, %.0f events/s for %.0f s", n, args.rate, duration)
        r = run_size(n, rate=args.rate, duration_s=duration)
        results.append(r)
        d = r["delivery_ms"]
        rows.append({"subscribers": n, "connected": r["connected"], "delivered": r["delivered_fraction"],
                     "p50 ms": d["p50"], "p99 ms": d["p99"], "max ms": d["max"],
                     "server CPU % (1 core)": r["server_cpu_percent_of_one_core"],
                     "server RSS MB": r["server_rss_mb"], "lagged": r["lagged_notices"]})  # fmt: skip
        if r["error"]:
            logger.warning("fan-out %d: %s", n, r["error"])
    table = markdown_table(rows)
    print(table)
    path = write_result("fanout" if args.out == "fanout" else args.out, {
        "settings": {"rate_per_s": args.rate, "duration_s": duration, "host": "127.0.0.1",
                     "note": "server and clients share the machine's cores; clients run in one asyncio process"},
        "results": results,
        "table": table,
    })  # fmt: skip
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
