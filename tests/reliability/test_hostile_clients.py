"""Hostile websocket clients against the real server, hub and event log on loopback.

Each test runs some misbehaving clients while one well-behaved client keeps checking that the
service answers it promptly (``ping`` -> ``pong``) and still receives live events; afterwards no
connection or subscription may be left behind. ``LoopLag`` measures the longest time the event loop
was blocked, which is what every other client of the process would feel.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from stream.config import ServerConfig
from stream.events.bus import EventBus
from stream.events.eventlog import EventLog
from stream.events.hub import Hub
from stream.server import Server

CFG = ServerConfig(
    host="127.0.0.1",
    port=0,
    max_connections=64,
    max_message_bytes=4096,
    subscriber_queue_events=200,
    ping_interval_s=0.5,
    ping_timeout_s=0.5,
)


class LoopLag:
    """The longest gap between ticks of a 5 ms timer on the event loop."""

    def __init__(self) -> None:
        self.max_s = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            self.max_s = max(self.max_s, now - last - 0.005)
            last = now

    def __enter__(self) -> LoopLag:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


class Service:
    """A server, its hub and event log, and a bus to publish events with."""

    def __init__(self, server: Server, bus: EventBus, hub: Hub, log: EventLog) -> None:
        self.server, self.bus, self.hub, self.log = server, bus, hub, log

    @property
    def url(self) -> str:
        return self.server.ws_url

    def publish(self, n: int, *, stream: str = "s1", pad: int = 0) -> None:
        for _ in range(n):
            self.bus.emit_nowait("transcript", stream, {"text": "x" * pad, "utterance_id": "u"})


@contextlib.asynccontextmanager
async def service(tmp_path: Path, cfg: ServerConfig = CFG) -> AsyncIterator[Service]:
    hub = Hub(queue_events=cfg.subscriber_queue_events)
    with EventLog(tmp_path / "events") as log:
        bus = EventBus([log.append, hub.publish])
        async with Server(cfg, hub, log, lambda: {"streams": [{"id": "s1"}]}) as server:
            yield Service(server, bus, hub, log)


async def recv_json(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:  # noqa: ASYNC109
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_until(ws: ClientConnection, kind: str, timeout: float = 5.0) -> dict[str, Any]:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while True:
        event = await recv_json(ws, max(0.01, deadline - time.monotonic()))
        if event["type"] == kind:
            return event


async def pong_ms(ws: ClientConnection) -> float:
    """Round trip of a protocol-level ``ping`` through the server's per-connection sender."""
    t0 = time.perf_counter()
    await ws.send('{"type": "ping"}')
    await recv_until(ws, "pong")
    return (time.perf_counter() - t0) * 1000


async def good_client_checks(svc: Service, ws: ClientConnection) -> float:
    """The good client still gets live events and pongs; returns the pong round trip in ms."""
    before = svc.bus.last_seq
    svc.publish(1, stream="good")
    event = await recv_until(ws, "transcript")
    while event["stream"] != "good":
        event = await recv_until(ws, "transcript")
    assert event["seq"] == before + 1
    return await pong_ms(ws)


async def wait_drained(svc: Service, timeout: float = 5.0) -> None:  # noqa: ASYNC109
    """Every hostile connection gone: no connection or subscription left behind."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if svc.server.connections <= 1 and svc.hub.stats().subscribers <= 1:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"leak: {svc.server.connections} connections, {svc.hub.stats().subscribers} subscribers")


# -- garbage ----------------------------------------------------------------------------------------


GARBAGE: list[str | bytes] = [
    "",
    "not json",
    "[1, 2, 3]",
    '"just a string"',
    "null",
    '{"type": 1}',
    '{"type": "subscribe", "streams": "s1"}',
    '{"type": "subscribe", "streams": [""]}',
    '{"type": "subscribe", "streams": ["\\ud800"]}',
    '{"type": "resume", "after_seq": -5}',
    '{"type": "resume", "after_seq": 1e400}',
    '{"type": "resume", "after_seq": "7"}',
    '{"type": "' + "x" * 3000 + '"}',
    "[" * 2000 + "]" * 2000,
    b"\xff\xfe\x00garbage",
    os.urandom(512),
    b'{"type": "ping"}',  # valid, as a binary frame
]


async def test_garbage_frames_get_error_events_and_the_connection_lives(tmp_path: Path) -> None:
    async with service(tmp_path) as svc, connect(svc.url) as bad, connect(svc.url) as good:
        await recv_until(bad, "hello")
        await recv_until(good, "hello")
        for frame in GARBAGE:
            await bad.send(frame)
        replies = [await recv_json(bad) for _ in GARBAGE]
        kinds = [r["type"] for r in replies]
        assert kinds == ["error"] * (len(GARBAGE) - 1) + ["pong"], kinds
        for r in replies[:-1]:
            assert r["data"]["code"] in ("bad_message", "bad_request")
            assert len(r["data"]["message"]) < 300, "error replies must not echo the payload back"
        assert await good_client_checks(svc, good) < 500
        assert await pong_ms(bad) < 500  # the bad client itself is still served


async def test_oversize_frame_closes_only_that_client(tmp_path: Path) -> None:
    async with service(tmp_path) as svc, connect(svc.url) as good:
        await recv_until(good, "hello")
        async with connect(svc.url, max_size=None) as big:
            await recv_until(big, "hello")
            await big.send("x" * (CFG.max_message_bytes + 1))
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    await recv_json(big)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1009
        assert await good_client_checks(svc, good) < 500
        await wait_drained(svc)


# -- floods and clients that never read ------------------------------------------------------------


async def test_flood_of_messages_from_a_client_that_never_reads(tmp_path: Path) -> None:
    """Pings as fast as possible, none of the pongs read: nobody else waits."""
    async with service(tmp_path) as svc, connect(svc.url) as good:
        await recv_until(good, "hello")
        flooder = await connect(svc.url, ping_interval=None, close_timeout=0.5)
        await recv_until(flooder, "hello")

        async def flood() -> int:
            sent = 0
            with contextlib.suppress(ConnectionClosed, TimeoutError):
                for _ in range(5_000):
                    await asyncio.wait_for(flooder.send('{"type":"ping"}'), 2.0)
                    sent += 1
            return sent

        with LoopLag() as lag:
            task = asyncio.create_task(flood())
            rtts = []
            for _ in range(10):
                await asyncio.sleep(0.05)
                rtts.append(await good_client_checks(svc, good))
            sent = await task
        assert sent > 1000, "the flood did not happen"
        assert max(rtts) < 500, rtts
        assert lag.max_s < 0.25, f"event loop blocked for {lag.max_s * 1000:.0f} ms"
        # Its pending commands are bounded (16, then the server stops reading it); never answering
        # the keepalive once its own buffers are full, it is dropped.
        await asyncio.sleep(CFG.ping_interval_s + CFG.ping_timeout_s + 1.0)
        await flooder.close()
        await wait_drained(svc)


async def test_never_reading_subscribers_do_not_slow_the_others(tmp_path: Path) -> None:
    async with service(tmp_path) as svc, connect(svc.url) as good:
        await recv_until(good, "hello")
        # Raw sockets: a real websocket handshake, then never a byte read again (not even pings).
        sleepers = []
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", svc.server.port))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(
                b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            sleepers.append(s)
        await asyncio.sleep(0.3)
        assert svc.server.connections == 21
        with LoopLag() as lag:
            got = 0
            for _ in range(20):
                svc.publish(100, pad=2000)  # 2 000 events of 2 kB: far more than any socket buffer
                await asyncio.sleep(0)
                while True:
                    try:
                        event = await recv_json(good, 0.2)
                    except TimeoutError:
                        break
                    got += event["type"] == "transcript"
                    if event["type"] == "lagged":
                        got += event["data"]["dropped"]
            rtt = await good_client_checks(svc, good)
        assert got >= 2000, f"the good client saw {got} of 2000 events"
        assert rtt < 500
        assert lag.max_s < 0.25, f"event loop blocked for {lag.max_s * 1000:.0f} ms"
        stats = svc.hub.stats()
        assert stats.max_queue_depth <= CFG.subscriber_queue_events, "a subscriber queue exceeded its bound"
        # The sleepers never answer pings: the keepalive must drop them.
        await asyncio.sleep(CFG.ping_interval_s + CFG.ping_timeout_s + 2.0)
        for s in sleepers:
            s.close()
        await wait_drained(svc, timeout=10)


# -- connection churn, limits, odd handshakes ------------------------------------------------------


async def test_thousand_connects_and_disconnects_leave_nothing_behind(tmp_path: Path) -> None:
    async with service(tmp_path) as svc, connect(svc.url) as good:
        await recv_until(good, "hello")

        async def clean() -> None:
            async with connect(svc.url) as ws:
                await recv_until(ws, "hello")

        def rude() -> None:
            # TCP reset right after the upgrade request, before reading anything.
            s = socket.create_connection(("127.0.0.1", svc.server.port))
            s.sendall(
                b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()

        def junk_http() -> None:
            s = socket.create_connection(("127.0.0.1", svc.server.port))
            s.sendall(b"\x16\x03\x01\x02\x00 definitely not HTTP\r\n\r\n")
            s.close()

        t0 = time.monotonic()
        for batch in range(25):
            await asyncio.gather(*(clean() for _ in range(24)))
            for _ in range(8):
                rude()
                junk_http()
            svc.publish(5)
            if batch % 5 == 0:
                assert await good_client_checks(svc, good) < 500
        elapsed = time.monotonic() - t0
        await wait_drained(svc)
        assert await good_client_checks(svc, good) < 500
        assert svc.server.refused == 0
        assert elapsed < 60


async def test_connection_limit_under_churn(tmp_path: Path) -> None:
    cfg = replace(CFG, max_connections=10)
    async with service(tmp_path, cfg) as svc:
        held = [await connect(svc.url) for _ in range(10)]
        for ws in held:
            await recv_until(ws, "hello")
        refused = []
        for _ in range(30):
            ws = await connect(svc.url)
            with pytest.raises(ConnectionClosed) as info:
                await recv_json(ws)
            refused.append(info.value.rcvd)
        assert all(r is not None and r.code == 1013 and "server full" in r.reason for r in refused)
        assert svc.server.refused == 30
        for ws in held[:5]:
            await ws.close()
        await asyncio.sleep(0.2)
        again = [await connect(svc.url) for _ in range(5)]
        for ws in again:
            await recv_until(ws, "hello")
        for ws in held[5:] + again:
            await ws.close()


# -- resume ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("after_seq", [10**9, 2**53, 999])
async def test_resume_from_a_seq_that_does_not_exist(tmp_path: Path, after_seq: int) -> None:
    async with service(tmp_path) as svc, connect(svc.url) as ws:
        svc.publish(50)
        await recv_until(ws, "hello")
        await ws.send(json.dumps({"type": "resume", "after_seq": after_seq}))
        err = await recv_until(ws, "error")
        assert err["data"]["code"] == "resume_unavailable"
        assert str(after_seq) in err["data"]["message"]
        # ... and the connection goes on live.
        assert await good_client_checks(svc, ws) < 500


async def test_resume_storm_does_not_block_the_loop(tmp_path: Path) -> None:
    """Clients replaying a long log over and over: the replay must yield to everyone else."""
    async with service(tmp_path) as svc:
        for _ in range(60):  # a long run's log (in slices: the keepalive of this test's clients runs too)
            svc.publish(1000)
            await asyncio.sleep(0)
        good = await connect(svc.url)
        await recv_until(good, "hello")
        stormers = [await connect(svc.url, max_size=None) for _ in range(4)]
        for ws in stormers:
            await recv_until(ws, "hello")
            # Filter everything out, then replay the whole log: nothing is sent, so nothing awaits.
            await ws.send(json.dumps({"type": "subscribe", "streams": ["nothing-matches"]}))
            await ws.send(json.dumps({"type": "resume", "after_seq": -1}))
        with LoopLag() as lag:
            await asyncio.sleep(0.05)
            rtt = await good_client_checks(svc, good)
            await asyncio.sleep(1.0)
        for ws in [*stormers, good]:
            await ws.close()
        assert rtt < 500, f"pong took {rtt:.0f} ms during the resume storm"
        assert lag.max_s < 0.25, f"event loop blocked for {lag.max_s * 1000:.0f} ms"


def masked_text_frame(payload: bytes) -> bytes:
    """A client->server websocket text frame (clients must mask), for raw-socket clients."""
    assert len(payload) < 126
    mask = os.urandom(4)
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@pytest.mark.timeout(60)
async def test_client_that_floods_commands_then_vanishes_leaves_nothing_behind(tmp_path: Path) -> None:
    """Its sender blocks (it never reads), its commands pile up, then it resets: no leak, no hung shutdown."""
    cfg = replace(CFG, ping_interval_s=30.0, ping_timeout_s=30.0)  # the keepalive must not be what saves us
    async with service(tmp_path, cfg) as svc, connect(svc.url) as good:
        await recv_until(good, "hello")
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)  # before connect: a tiny window
        s.connect(("127.0.0.1", svc.server.port))
        s.sendall(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await asyncio.sleep(0.2)
        for _ in range(150):  # 30 MB: more than the kernel buffers hold, so its sender blocks in send()
            svc.publish(100, pad=2000)
            await asyncio.sleep(0.005)
        (conn,) = [c for c in svc.server._connections if c.ws.remote_address[1] == s.getsockname()[1]]
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            for _ in range(200):  # more commands than the per-connection queue holds
                s.send(masked_text_frame(b'{"type":"ping"}'))
        await asyncio.sleep(0.3)
        assert conn.commands.full(), "the scenario needs a full command queue"
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()  # TCP reset
        await wait_drained(svc, timeout=5)
        assert await good_client_checks(svc, good) < 500
        t0 = time.monotonic()
        await good.close()
        await asyncio.wait_for(svc.server.aclose(), 5)  # shutdown must not wait on a dead connection
    assert time.monotonic() - t0 < 5
