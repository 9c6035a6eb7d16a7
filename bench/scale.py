"""Past one machine, on one machine: 2 workers + 2 gateways on Redis Streams, 1,000 subscribers, 6 streams.

Every process is real: ``redis-server``, two ``emostream gateway`` processes, two ``emostream worker``
processes taking six submitted replay jobs (the bundled demo recording, in real time) through the
consumer group, and 1,000 websocket subscribers (in this process, split evenly across the gateways)
that connect before the first event. Checked: every subscriber receives every logged event exactly
once and in seq order (compared with ``P:events`` in Redis). Measured: delivery time (arrival minus
the event's ``ts``, stamped by the worker before it publishes: Redis, gateway and websocket included),
the CPU of each process, Redis's events/s, bytes/event and memory.

By default the workers' two model stages are instant stand-ins (the VAD, segmenter, pipeline and
Redis bus are real): this benchmark is about the bus and the fan-out, and Whisper on the shared
cores would only add noise. ``--real-models`` runs the packaged models instead.

Usage: ``python -m bench.scale [--subscribers 1000] [--streams 6] [--speed 1] [--media FILE]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import REPO, markdown_table, setup_logging, summarize, write_result
from bench.procs import Procs, free_port, start_redis, wait_port
from bench.redis_rate import publish_only

logger = logging.getLogger(__name__)

DEMO = REPO / "stream" / "assets" / "demo.flac"
CONNECT_BATCH = 50


# --------------------------------------------------------------------------- worker role (instant models)


class _InstantTranscriber:
    model_id = "bench-instant"

    @property
    def paths(self) -> dict[str, int]:
        return {}

    def transcribe(self, audio: Any, *, redo: bool = True) -> Any:
        from stream.records import Transcript

        text = "Well, I guess that is the last time we ever let Joey choose the restaurant."
        return Transcript(text, "en", -0.2, 0.01, None, text)


class _InstantPredictor:
    uses_text = True
    uses_audio = False
    model_ids = {"classifier": "bench-instant"}  # noqa: RUF012 - mirrors EmotionPredictor

    def __init__(self) -> None:
        from stream.protocol import LABELS

        self.labels = tuple(LABELS)

    def predict(self, texts: Sequence[str | None], audio: Sequence[Any]) -> list[Any]:
        from training.inference import Prediction

        scores = {lab: (0.7 if lab == "neutral" else 0.05) for lab in self.labels}
        return [Prediction("neutral", scores, ("text",)) for _ in texts]


def _worker_main(args: list[str], real: bool) -> int:
    import stream.models
    from stream.cli import main

    if not real:
        stream.models.load_models = lambda config: (_InstantTranscriber(), _InstantPredictor())
    return main(["worker", *args])


# --------------------------------------------------------------------------- processes


# --------------------------------------------------------------------------- subscribers


@dataclass(frozen=True, slots=True)
class Measured:
    """What the run measured besides the subscribers' frames."""

    cpu0: dict[str, float]  # CPU seconds per process when the jobs were submitted ...
    cpu1: dict[str, float]  # ... and when the subscribers were done
    client_cpu_s: float
    wall: float
    connect_s: float
    rss: dict[str, float]
    unfinished: int


@dataclass(slots=True)
class Subscriber:
    gateway: int
    frames: list[tuple[float, str]]
    connected: bool = False
    error: str | None = None


async def _subscribe(sub: Subscriber, url: str, streams: int, ready: asyncio.Event, stop: asyncio.Event) -> None:
    from websockets.asyncio.client import connect

    ends = 0
    try:
        async with connect(url, max_size=2**22, open_timeout=120, ping_interval=None) as ws:
            await ws.recv()  # hello
            sub.connected = True
            ready.set()
            async for raw in ws:
                # Stamp now, parse later: one process reads for every subscriber.
                text = raw if isinstance(raw, str) else raw.decode()
                sub.frames.append((time.time(), text))
                if '"type":"end"' in text:
                    ends += 1
                    if ends >= streams:
                        return
                if stop.is_set():
                    return
    except Exception as exc:  # counted and reported; one failed client must not hide the others' figures
        sub.error = f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------- the run


async def _redis_report(url: str, prefix: str, wall_s: float) -> tuple[dict[str, Any], list[int]]:
    import redis.asyncio as aioredis

    from stream.events.redis_bus import Keys

    keys = Keys(prefix)
    client = aioredis.Redis.from_url(url)
    try:
        entries: Any = await client.xrange(keys.events)
        seqs = [int(i.decode().partition("-")[0]) for i, _ in entries]
        payload = sum(len(f[b"e"]) for _, f in entries)
        kinds: dict[str, int] = {}
        kind_bytes: dict[str, int] = {}
        for _i, f in entries:
            kind = json.loads(f[b"e"])["type"]
            kinds[kind] = kinds.get(kind, 0) + 1
            kind_bytes[kind] = kind_bytes.get(kind, 0) + len(f[b"e"])
        stream_keys = [k async for k in client.scan_iter(match=f"{prefix}:stream:*")]
        stream_bytes = sum([int(await client.memory_usage(k) or 0) for k in stream_keys])
        firehose_bytes = int(await client.memory_usage(keys.events) or 0)
        info = await client.info()
        n = len(seqs)
        return {
            "events": n,
            "events_by_type": kinds,
            "json_bytes_by_type": {k: round(kind_bytes[k] / kinds[k]) for k in kinds},
            "events_per_s": round(n / wall_s, 2),
            "json_bytes_per_event": round(payload / n, 1) if n else None,
            "firehose_memory_bytes_per_event": round(firehose_bytes / n, 1) if n else None,
            "per_stream_memory_bytes_per_event": round(stream_bytes / n, 1) if n else None,
            "used_memory_mb": round(int(info["used_memory"]) / 2**20, 2),
            "commands_processed": int(info["total_commands_processed"]),
            "commands_per_s": round(int(info["total_commands_processed"]) / wall_s, 1),
        }, seqs
    finally:
        await client.aclose()


async def _connect_all(
    args: argparse.Namespace, gw_ports: list[int]
) -> tuple[list[Subscriber], list[asyncio.Task[None]], float]:
    """Every subscriber connected (split across the gateways), ramped in batches."""
    subs = [Subscriber(i % args.gateways, []) for i in range(args.subscribers)]
    stop = asyncio.Event()
    tasks = []
    t_connect = time.monotonic()
    for start in range(0, len(subs), CONNECT_BATCH):
        for sub in subs[start : start + CONNECT_BATCH]:
            ready = asyncio.Event()
            url_ws = f"ws://127.0.0.1:{gw_ports[sub.gateway]}/ws"
            tasks.append(asyncio.create_task(_subscribe(sub, url_ws, args.streams, ready, stop)))
        await asyncio.sleep(0.05)
    while sum(s.connected or s.error is not None for s in subs) < len(subs):
        if time.monotonic() - t_connect > 120:
            raise RuntimeError("subscribers did not connect within 120 s")
        await asyncio.sleep(0.1)
    return subs, tasks, time.monotonic() - t_connect


async def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    from stream.config import load_config
    from stream.events.redis_bus import connect
    from stream.events.redis_jobs import JobQueue

    cfg_path = folder / "config.toml"
    cfg_path.write_text(
        "[server]\nmax_connections = 5000\nstats_interval_s = 5.0\n"
        '[log]\nstdout_events = false\nevent_log_dir = "events"\n'
        f"[bus]\nworker_jobs = {max(1, -(-args.streams // args.workers))}\n"
        f"[audio]\nreplay_speed = {args.speed}\n" + (f'[asr]\nmodel = "{args.asr_model}"\n' if args.real_models else "")
    )
    procs = Procs(folder)
    port, _redis = start_redis(procs, folder, "everysec" if args.aof else "none")
    url = f"redis://127.0.0.1:{port}/0"
    try:
        await wait_port(port, procs.check_alive)
        gw_ports = await _start_gateways(procs, args.gateways, cfg_path, url)
        # Subscribers first: they must see every event live, from the first.
        subs, tasks, connect_s = await _connect_all(args, gw_ports)
        client = connect(url)
        await _start_workers(procs, args, cfg_path, url, client)
        import psutil

        me = psutil.Process()
        cpu0, my0, t0 = procs.cpu_s(), me.cpu_times(), time.monotonic()
        queue = JobQueue(client, load_config(cfg_path, **{"bus.url": url}).bus)
        for i in range(args.streams):
            # Staggered, as independent live streams are: six copies of one file started together would
            # emit every event six times in the same millisecond (a burst no real deployment sees).
            await queue.submit(args.media, f"s{i + 1}")
            await asyncio.sleep(args.stagger)
        timeout = args.media_s / args.speed + 120 + args.stagger * args.streams
        _done, pending = await asyncio.wait(tasks, timeout=timeout)
        for t in pending:
            t.cancel()
        wall = time.monotonic() - t0
        cpu1, my1 = procs.cpu_s(), me.cpu_times()
        rss = procs.rss_mb()
        await client.aclose()
        redis_report, seqs = await _redis_report(url, "emostream", wall)
    finally:
        procs.stop_all()
    measured = Measured(cpu0, cpu1, (my1.user + my1.system) - (my0.user + my0.system), wall, connect_s, rss,
                        len(pending))  # fmt: skip
    return _report(args, subs, seqs, redis_report, measured)


async def _start_gateways(procs: Procs, n: int, cfg_path: Path, url: str) -> list[int]:
    """``n`` gateway processes on the bus at ``url``, each listening; returns their ports."""
    gw_ports = [free_port() for _ in range(n)]
    for i, p in enumerate(gw_ports):
        procs.start(f"gateway{i + 1}", [sys.executable, "-m", "stream", "gateway", "--config", str(cfg_path),
                                        "--bus", url, "--port", str(p), "--log-level", "WARNING"])  # fmt: skip
    await asyncio.gather(*(wait_port(p, procs.check_alive) for p in gw_ports))
    return gw_ports


async def _start_workers(procs: Procs, args: argparse.Namespace, cfg_path: Path, url: str, client: Any) -> None:
    """``args.workers`` worker processes, returning once every one has registered on the bus."""
    from stream.events.redis_bus import Keys

    keys = Keys("emostream")
    for i in range(args.workers):
        cmd = [sys.executable, "-m", "bench.scale", "--worker-role", "--config", str(cfg_path), "--bus", url]
        procs.start(f"worker{i + 1}", cmd + (["--real-models"] if args.real_models else []))
    deadline = time.monotonic() + 300
    while await client.hlen(keys.workers) < args.workers:
        procs.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError("workers did not register within 300 s")
        await asyncio.sleep(0.2)


def _report(
    args: argparse.Namespace,
    subs: list[Subscriber],
    seqs: list[int],
    redis_report: dict[str, Any],
    m: Measured,
) -> dict[str, Any]:
    latencies: list[float] = []
    per_gateway: dict[int, list[float]] = {}
    exact = lagged = 0
    problems: list[str] = []
    for sub in subs:
        got = []
        for arrival, text in sub.frames:
            event = json.loads(text)
            if event["stream"] == "_connection":
                lagged += event["type"] == "lagged"
                continue
            got.append(event["seq"])
            ms = 1000 * (arrival - event["ts"])
            latencies.append(ms)
            per_gateway.setdefault(sub.gateway, []).append(ms)
        # Connected before the first event: it must hold exactly P:events from the start, in order.
        if got and got == seqs[: len(got)] and sum('"type":"end"' in t for _a, t in sub.frames) >= args.streams:
            exact += 1
        elif len(problems) < 5:
            problems.append(sub.error or f"received {len(got)} events, first mismatch vs P:events")
    cpu = {k: round(m.cpu1.get(k, 0.0) - m.cpu0.get(k, 0.0), 2) for k in m.cpu1}
    return {
        "settings": {
            "subscribers": args.subscribers,
            "gateways": args.gateways,
            "workers": args.workers,
            "streams": args.streams,
            "media": str(args.media),
            "media_s": round(args.media_s, 2),
            "speed": args.speed,
            "models": args.asr_model if args.real_models else "instant stand-ins",
            "redis_persistence": "AOF everysec" if args.aof else "none",
        },  # fmt: skip
        "subscribers_exact": exact,
        "subscribers_connected": sum(s.connected for s in subs),
        "subscribers_failed": sum(s.error is not None for s in subs),
        "subscribers_unfinished": m.unfinished,
        "lagged_notices": lagged,
        "problems": problems,
        "deliveries": len(latencies),
        "delivery_ms": summarize(latencies, digits=2),
        "delivery_ms_by_gateway": {f"gateway{g + 1}": summarize(v, digits=2) for g, v in sorted(per_gateway.items())},
        "wall_s": round(m.wall, 2),
        "connect_s": round(m.connect_s, 2),
        "cpu_s": cpu,
        "cpu_percent_of_one_core": {k: round(100 * v / m.wall, 1) for k, v in cpu.items()},
        "client_process_cpu_s": round(m.client_cpu_s, 2),
        "rss_mb": m.rss,
        "redis": redis_report,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.worker_role:
        return _worker_main(["--config", args.config, "--bus", args.bus, "--log-level", "WARNING"], args.real_models)
    setup_logging()
    if args.publish_only:
        return publish_only(args.publish_only, args.producers, args.out)
    from training.audio import SAMPLE_RATE_HZ, load_audio

    args.media_s = len(load_audio(args.media)) / SAMPLE_RATE_HZ
    logger.info("scale: %d workers, %d gateways, %d subscribers, %d streams of %.0f s at %.1fx",
                args.workers, args.gateways, args.subscribers, args.streams, args.media_s, args.speed)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="emostream-scale-") as tmp:
        result = asyncio.run(run(args, Path(tmp)))
    d = result["delivery_ms"]
    rows = [{"subscribers": args.subscribers, "exact (once, in order)": result["subscribers_exact"],
             "events": result["redis"]["events"], "deliveries": result["deliveries"], "p50 ms": d["p50"],
             "p99 ms": d["p99"], "max ms": d["max"], "lagged": result["lagged_notices"]}]  # fmt: skip
    cpu_rows = [{"process": k, "CPU s": v, "% of one core": result["cpu_percent_of_one_core"][k],
                 "RSS MB": result["rss_mb"].get(k)} for k, v in result["cpu_s"].items()]  # fmt: skip
    table = markdown_table(rows) + "\n\n" + markdown_table(cpu_rows)
    print(table)
    print(json.dumps(result["redis"], indent=2))
    path = write_result(args.out, {**result, "table": table})
    print(f"written {path}")
    ok = result["subscribers_exact"] == args.subscribers
    if not ok:
        logger.error("not every subscriber got every event once and in order: %s", result["problems"])
    return 0 if ok else 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--subscribers", type=int, default=1000)
    p.add_argument("--gateways", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--streams", type=int, default=6)
    p.add_argument("--media", type=Path, default=DEMO, help="the recording every stream replays")
    p.add_argument("--speed", type=float, default=1.0, help="replay speed (1 = real time)")
    p.add_argument("--stagger", type=float, default=1.7, help="seconds between the streams' starts")
    p.add_argument("--real-models", action="store_true", help="run the packaged models in the workers")
    p.add_argument("--asr-model", default="tiny.en", help="with --real-models (default tiny.en)")
    p.add_argument("--aof", action="store_true", help="Redis with an append-only file (fsync every second)")
    p.add_argument("--out", default="scale", help="result name under bench/results/")
    p.add_argument(
        "--publish-only",
        type=int,
        default=0,
        metavar="N",
        help="measure Redis alone: N events from --producers publishers (no gateways, no workers)",
    )
    p.add_argument("--producers", type=int, default=8)
    p.add_argument("--worker-role", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--config", default=None, help=argparse.SUPPRESS)
    p.add_argument("--bus", default=None, help=argparse.SUPPRESS)
    return p


if __name__ == "__main__":
    raise SystemExit(main())
