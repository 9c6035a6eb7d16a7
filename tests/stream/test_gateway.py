"""Gateways on Redis: the websocket protocol from ``P:events``; resume on any gateway; a gateway killed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect as ws_connect

from bench.procs import wait_port
from stream.config import load_config
from stream.events.redis_bus import RedisEventBus, connect
from stream.gateway import run_gateway
from tests.redisd import RedisServer, free_port

REPO = Path(__file__).resolve().parents[2]


def config(url: str, **kw: Any) -> Any:
    return load_config(None, **{"bus.url": url, "server.port": 0, "server.ping_interval_s": 5.0, **kw})


async def publish(bus: RedisEventBus, n: int, *, every_s: float = 0.0, stream: str = "ep") -> None:
    for i in range(n):
        await bus.emit("transcript", stream, {"utterance_id": f"{stream}-{i + 1}", "text": f"line {i + 1}"})
        if every_s:
            await asyncio.sleep(every_s)


class Client:
    """A websocket client that keeps every logged event it receives (the dashboard's bookkeeping)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.hellos: list[dict[str, Any]] = []

    @property
    def last_seq(self) -> int:
        """The highest seq held: what a client sends in ``resume``."""
        return max((e["seq"] for e in self.events), default=-1)

    @property
    def complete_to(self) -> int:
        """Every seq from 1 to this one is held. (Live events that arrive before a ``resume`` is read
        come before the replayed ones, so a client may hold a later seq before the earlier ones.)"""
        have = {e["seq"] for e in self.events}
        n = 0
        while n + 1 in have:
            n += 1
        return n

    def check_once_each(self, last: int) -> None:
        seqs = [e["seq"] for e in self.events]
        assert len(seqs) == len(set(seqs)), "a duplicate"
        assert sorted(seqs) == list(range(1, last + 1)), "a gap"

    async def session(self, url: str, *, until: int, resume: bool, timeout_s: float = 30.0) -> None:
        """Connect, resume from what we hold, read until all of 1..``until`` are held (or the connection
        drops)."""
        with contextlib.suppress(OSError, Exception):
            async with ws_connect(url, open_timeout=10) as ws:
                hello = json.loads(await ws.recv())
                self.hellos.append(hello)
                if resume:
                    await ws.send(json.dumps({"type": "resume", "after_seq": self.last_seq}))
                deadline = time.monotonic() + timeout_s
                while self.complete_to < until and time.monotonic() < deadline:
                    event = json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
                    if event["stream"] != "_connection":
                        self.events.append(event)


async def test_two_gateways_serve_the_same_run_and_resume_across(redis_server: RedisServer) -> None:
    cfg = config(redis_server.url)
    client = connect(redis_server.url)
    bus = RedisEventBus(client, cfg.bus, producer_id="test")
    await publish(bus, 30)  # before any gateway: only `resume` can give these
    servers: list[Any] = []
    stops = [asyncio.Event(), asyncio.Event()]
    gateways = [asyncio.create_task(run_gateway(cfg, stop=s, on_ready=servers.append)) for s in stops]
    for _ in range(200):
        if len(servers) == 2:
            break
        await asyncio.sleep(0.05)
    assert len(servers) == 2, "gateways did not start"
    a, b = servers
    producer = asyncio.create_task(publish(bus, 120, every_s=0.005, stream="ep2"))
    viewer = Client()
    await viewer.session(a.ws_url, until=60, resume=True)  # the 30 old ones, then live
    await viewer.session(b.ws_url, until=150, resume=True)  # continue on the other gateway
    await producer
    assert viewer.hellos[0]["data"]["run_id"] == viewer.hellos[1]["data"]["run_id"]
    viewer.check_once_each(150)
    # A client asking for more than exists is told so and stays live.
    async with ws_connect(b.ws_url) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "resume", "after_seq": 10_000}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert reply["type"] == "error" and reply["data"]["code"] == "resume_unavailable"
    for s in stops:
        s.set()
    assert await asyncio.gather(*gateways) == [0, 0]
    await client.aclose()


def _gateway(url: str, port: int, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "stream", "gateway", "--bus", url, "--port", str(port), "--log-level", "INFO"]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _alive(proc: subprocess.Popen[str]) -> Callable[[], None]:
    def check() -> None:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else "gateway exited"

    return check


async def test_killed_gateway_clients_resume_on_the_other(redis_server: RedisServer, tmp_path: Path) -> None:
    ports = [free_port(), free_port()]
    procs = [_gateway(redis_server.url, p, tmp_path) for p in ports]
    try:
        await asyncio.gather(*(wait_port(p, _alive(q), 60.0) for p, q in zip(ports, procs, strict=True)))
        cfg = config(redis_server.url)
        client = connect(redis_server.url)
        bus = RedisEventBus(client, cfg.bus, producer_id="test")
        producer = asyncio.create_task(publish(bus, 300, every_s=0.01))
        viewers = [Client() for _ in range(4)]
        url_a, url_b = (f"ws://127.0.0.1:{p}/ws" for p in ports)

        async def first_leg(v: Client) -> None:
            await v.session(url_a, until=10_000, resume=True, timeout_s=60)

        legs = [asyncio.create_task(first_leg(v)) for v in viewers]
        # Kill once every client has its replay done and is live (holds 1..n, n >= 80): it then resumes
        # from its highest seq, as the dashboard does.
        while not all(v.complete_to == v.last_seq >= 80 for v in viewers):  # noqa: ASYNC110 - clients' progress
            await asyncio.sleep(0.01)
        procs[0].send_signal(signal.SIGKILL)  # kill -9 gateway A mid-stream
        procs[0].wait(10)
        await asyncio.gather(*legs)
        assert all(v.last_seq < 300 for v in viewers), "the stream ended before the kill"
        await asyncio.gather(*(v.session(url_b, until=300, resume=True) for v in viewers))
        await producer
        for v in viewers:
            v.check_once_each(300)
        await client.aclose()
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(10)
