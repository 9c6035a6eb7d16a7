"""Soak: hostile websocket traffic for a bounded time while a well-behaved client measures the service.

The server runs in its own process -- the real :class:`stream.server.Server` with a :class:`stream.events.hub.Hub`
and the JSONL :class:`stream.events.eventlog.EventLog`, an :class:`stream.events.bus.EventBus` publishing
``emotion`` events at ``--rate`` -- and samples its own memory, connection count and event-loop lag.
This process (127.0.0.1 only) runs, all at once for ``--duration`` seconds:

* churn: thousands of connect / hello / close cycles, some cut by a TCP reset mid-handshake;
* floods: clients sending ``ping`` as fast as they can and never reading the replies;
* sleepers: raw sockets that complete the websocket handshake and never read a byte again;
* garbage: clients sending malformed frames (expecting an ``error`` event each) and oversize frames
  (expecting close code 1009);
* resume: ``resume`` from a seq that does not exist (expecting ``resume_unavailable``) and full
  replays of the log with a filter that matches nothing;
* a probe: one normal subscriber timing ``ping`` -> ``pong`` every 100 ms and checking that its live
  events arrive in order with no duplicate.

Then everyone leaves, and the server reports whether any connection or subscription was left behind.
Prints a table and writes ``bench/results/soak.json``. Usage:
``python -m bench.soak [--duration 30] [--churn 3000] [--rate 20]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import REPO, RESULTS, markdown_table, setup_logging, summarize, write_result
from bench.soak_server import HOST, serve

logger = logging.getLogger(__name__)

HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
GARBAGE: tuple[str | bytes, ...] = (
    "not json",
    "[1,2,3]",
    '{"type": 7}',
    '{"type": "subscribe", "streams": "all"}',
    '{"type": "resume", "after_seq": -9}',
    b"\xff\xfe\x00",
    "[" * 1500 + "]" * 1500,  # deeper than the JSON parser recurses, within max_message_bytes
    '{"type": "' + "y" * 3500 + '"}',
)


# --------------------------------------------------------------------------- clients


class Tally:
    def __init__(self) -> None:
        self.ok = 0
        self.failed = 0
        self.errors: dict[str, int] = {}

    def note(self, what: str) -> None:
        """An expected outcome worth counting (not a failure)."""
        self.errors[what] = self.errors.get(what, 0) + 1

    def fail(self, exc: BaseException | str) -> None:
        self.failed += 1
        key = exc if isinstance(exc, str) else type(exc).__name__
        self.errors[key] = self.errors.get(key, 0) + 1


async def _recv(ws: Any, timeout: float = 10.0) -> dict[str, Any]:  # noqa: ASYNC109
    event: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return event


async def _recv_type(ws: Any, kind: str, timeout: float = 10.0) -> dict[str, Any]:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while True:
        event = await _recv(ws, max(0.01, deadline - time.monotonic()))
        if event["type"] == kind:
            return event


async def _probe(url: str, until: float, out: dict[str, Any]) -> None:
    from websockets.asyncio.client import connect

    rtts: list[float] = []
    seqs: list[int] = []
    lagged = 0
    async with connect(url, max_size=2**22) as ws:
        await _recv_type(ws, "hello")
        while time.monotonic() < until:
            t0 = time.perf_counter()
            await ws.send('{"type":"ping"}')
            while True:
                event = await _recv(ws)
                if event["type"] == "emotion":
                    seqs.append(event["seq"])
                elif event["type"] == "lagged":
                    lagged += 1
                elif event["type"] == "pong":
                    break
            rtts.append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(0.1)
    out.update(
        pongs=len(rtts),
        rtt_ms=summarize(rtts, digits=2),
        events=len(seqs),
        in_order=all(b > a for a, b in zip(seqs, seqs[1:], strict=False)),
        lagged=lagged,
    )


async def _churn(url: str, port: int, until: float, args: argparse.Namespace, tally: Tally) -> None:
    from websockets.asyncio.client import connect

    count = {"n": 0}
    target, workers = args.churn, args.churn_workers

    def reset_mid_handshake() -> None:
        s = socket.create_connection((HOST, port), timeout=5)
        s.sendall(HANDSHAKE)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST on close
        s.close()

    async def worker() -> None:
        while time.monotonic() < until and count["n"] < target:
            count["n"] += 1
            try:
                if count["n"] % 10 == 0:
                    reset_mid_handshake()
                else:
                    async with connect(url, open_timeout=10) as ws:
                        await _recv_type(ws, "hello")
                tally.ok += 1
            except Exception as exc:
                tally.fail(exc)

    await asyncio.gather(*(worker() for _ in range(workers)))


async def _flood(url: str, until: float, tally: Tally) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    try:
        async with connect(url, ping_interval=None, max_queue=1) as ws:
            while time.monotonic() < until:
                await asyncio.wait_for(ws.send('{"type":"ping"}'), max(0.05, until - time.monotonic()))
                tally.ok += 1
    except TimeoutError:
        tally.note("pushed back until the end")
    except ConnectionClosed:
        tally.note("dropped by the server")  # it stopped answering the keepalive: the intended outcome
    except Exception as exc:
        tally.fail(exc)


def _sleepers(port: int, n: int, tally: Tally) -> list[socket.socket]:
    """Handshaken sockets that never read; kept open until the server has reported, so only its
    keepalive can free them (else they show up as connections left behind)."""
    socks = []
    for _ in range(n):
        s = socket.create_connection((HOST, port), timeout=5)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(HANDSHAKE)
        socks.append(s)
        tally.ok += 1
    return socks


async def _garbage(url: str, until: float, max_bytes: int, tally: Tally) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    while time.monotonic() < until:
        try:
            async with connect(url, max_size=2**22) as ws:
                await _recv_type(ws, "hello")
                for frame in GARBAGE:
                    await ws.send(frame)
                for _ in GARBAGE:
                    reply = await _recv_type(ws, "error")
                    if reply["data"]["code"] not in ("bad_message", "bad_request"):
                        tally.fail(f"unexpected code {reply['data']['code']}")
                await ws.send("z" * (max_bytes + 1))
                try:
                    while True:
                        await _recv(ws)
                except ConnectionClosed as closed:
                    if closed.rcvd is None or closed.rcvd.code != 1009:
                        tally.fail(f"oversize closed with {closed.rcvd}")
                        continue
            tally.ok += 1
        except Exception as exc:
            tally.fail(exc)


async def _resume(url: str, until: float, tally: Tally) -> None:
    from websockets.asyncio.client import connect

    while time.monotonic() < until:
        try:
            async with connect(url, max_size=2**22) as ws:
                await _recv_type(ws, "hello")
                await ws.send('{"type":"resume","after_seq":9007199254740992}')
                reply = await _recv_type(ws, "error")
                if reply["data"]["code"] != "resume_unavailable":
                    tally.fail(f"unexpected code {reply['data']['code']}")
                    continue
                await ws.send('{"type":"subscribe","streams":["nothing-matches"]}')
                await ws.send('{"type":"resume","after_seq":-1}')
                await ws.send('{"type":"ping"}')
                await _recv_type(ws, "pong", timeout=30)
            tally.ok += 1
        except Exception as exc:
            tally.fail(exc)


async def _drive(url: str, port: int, args: argparse.Namespace) -> dict[str, Any]:
    until = time.monotonic() + args.duration
    tallies = {k: Tally() for k in ("churn", "flood", "sleepers", "garbage", "resume")}
    probe: dict[str, Any] = {}
    jobs = [
        _probe(url, until, probe),
        _churn(url, port, until, args, tallies["churn"]),
        *(_flood(url, until, tallies["flood"]) for _ in range(args.floods)),
        *(_garbage(url, until, args.max_message_bytes, tallies["garbage"]) for _ in range(2)),
        *(_resume(url, until, tallies["resume"]) for _ in range(2)),
    ]
    sleepers = _sleepers(port, args.sleepers, tallies["sleepers"])
    results = await asyncio.gather(*jobs, return_exceptions=True)
    failures = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
    return {"probe": probe, "tallies": tallies, "failures": failures, "sleepers": sleepers}


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="emostream-soak-") as tmp:
        cmd = [sys.executable, "-m", "bench.soak", "--serve", "--rate", str(args.rate), "--log-dir", tmp,
               "--max-message-bytes", str(args.max_message_bytes), "--ping", str(args.ping)]  # fmt: skip
        server = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None and server.stdin is not None
            line = server.stdout.readline().strip()
            if not line.startswith("PORT "):
                raise RuntimeError(f"the soak server did not start (said {line!r})")
            port = int(line.split()[1])
            t0 = time.monotonic()
            driven = asyncio.run(_drive(f"ws://{HOST}:{port}/ws", port, args))
            elapsed = time.monotonic() - t0
            server.stdin.write("stop\n")
            server.stdin.flush()
            out, _ = server.communicate(timeout=60)
            for s in driven.pop("sleepers"):
                s.close()
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
    return {"server": json.loads(out.strip().splitlines()[-1]), "elapsed_s": round(elapsed, 1), **driven}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=30.0, help="seconds of hostile traffic (default 30)")
    p.add_argument("--churn", type=int, default=3000, help="connect/disconnect cycles (default 3000)")
    p.add_argument("--churn-workers", type=int, default=24, help="concurrent churning clients (default 24)")
    p.add_argument("--floods", type=int, default=8, help="clients flooding pings without reading (default 8)")
    p.add_argument("--sleepers", type=int, default=100, help="handshaken sockets that never read (default 100)")
    p.add_argument("--rate", type=float, default=20.0, help="events per second published (default 20)")
    p.add_argument("--ping", type=float, default=5.0, help="server keepalive interval and timeout, s (default 5)")
    p.add_argument("--max-message-bytes", type=int, default=4096)
    p.add_argument("--out", default="soak", help="result name under bench/results/")
    p.add_argument("--results-dir", type=Path, default=RESULTS, help="where the JSON goes (default bench/results)")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--log-dir", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        logging.basicConfig(level=logging.ERROR)
        report = asyncio.run(serve(args.rate, args.log_dir, args.max_message_bytes, args.ping))
        print(json.dumps(report), flush=True)
        return 0
    if args.duration > 600:
        p.error("--duration is capped at 600 s: this is a bounded soak")
    setup_logging()
    logger.info("soak: %.0f s on %s, %d churn cycles, %d floods, %d sleepers (pid %d)",
                args.duration, HOST, args.churn, args.floods, args.sleepers, os.getpid())  # fmt: skip
    r = run(args)
    srv, probe = r["server"], r["probe"]
    table = _table(r)
    print(table)
    if r["failures"]:
        logger.warning("client tasks failed: %s", r["failures"])
    path = write_result(args.out, {
        "settings": {k: v for k, v in vars(args).items() if k not in ("serve", "log_dir", "results_dir")},
        "elapsed_s": r["elapsed_s"],
        "probe": probe,
        "loads": {k: {"ok": t.ok, "failed": t.failed, "errors": t.errors} for k, t in r["tallies"].items()},
        "server": srv,
        "failures": r["failures"],
        "table": table,
    }, out_dir=args.results_dir)  # fmt: skip
    print(f"written {path}")
    leaked = srv["connections_left"] or srv["subscribers_left"]
    return 1 if leaked or r["failures"] or not probe.get("in_order", False) else 0


def _table(r: dict[str, Any]) -> str:
    """The loads (ok, failed, notes) and the headline figures, as markdown."""
    srv, probe = r["server"], r["probe"]
    rtt = probe.get("rtt_ms", {})
    pong = f"{rtt.get('p50')} / {rtt.get('p99')} / {rtt.get('max')}"
    rss = f"{srv['rss_start_mb']} / {srv['rss_peak_mb']} / {srv['rss_end_mb']}"
    conns = f"{srv['max_connections_seen']} / {srv['connections_at_stop']}"
    left = f"{srv['connections_left']} / {srv['subscribers_left']}"
    rows = [
        {"load": name, "ok": t.ok, "failed": t.failed, "notes": ", ".join(f"{k} ×{v}" for k, v in t.errors.items())}
        for name, t in r["tallies"].items()
    ]
    summary = [
        {"figure": "probe pongs / events received", "value": f"{probe.get('pongs')} / {probe.get('events')}"},
        {"figure": "probe events in order, no duplicate", "value": str(probe.get("in_order"))},
        {"figure": "probe ping->pong p50 / p99 / max (ms)", "value": pong},
        {"figure": "server max event-loop block (ms)", "value": str(srv["max_loop_lag_ms"])},
        {"figure": "server RSS start / peak / end (MB)", "value": rss},
        {"figure": "server CPU (% of one core)", "value": str(srv["cpu_percent_of_one_core"])},
        {"figure": "server connections: peak / when the load stopped", "value": conns},
        {"figure": "connections / subscriptions left after", "value": left},
        {"figure": "events published / hub drops", "value": f"{srv['events']} / {srv['hub']['dropped_total']}"},
    ]  # fmt: skip
    return markdown_table(rows) + "\n" + markdown_table(summary)


if __name__ == "__main__":
    raise SystemExit(main())
