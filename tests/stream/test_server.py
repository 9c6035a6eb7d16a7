"""The websocket + static server on real loopback sockets (port 0) with real ``websockets`` clients."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from stream.config import ServerConfig
from stream.events.bus import EventBus
from stream.events.eventlog import EventLog, LogHistory
from stream.events.hub import Hub
from stream.protocol import CONNECTION_STREAM, LABELS, PROTOCOL_VERSION, SERVICE_STREAM, Event
from stream.server import Server

pytestmark = pytest.mark.timeout(60)


class ScriptBus:
    """Events made by the test, through the real EventBus wired as the service wires it (log, then hub)."""

    def __init__(self, log: EventLog, hub: Hub) -> None:
        self.bus = EventBus([log.append, hub.publish])
        self.seq = -1

    def emit(self, kind: str, stream: str = "mic", **data: Any) -> Event:
        event = self.bus.emit_nowait(kind, stream, data)
        self.seq = event.seq
        return event

    def utterance(self, stream: str = "mic", text: str = "hello", label: str = "joy") -> Event:
        scores = {name: (0.7 if name == label else 0.05) for name in LABELS}
        return self.emit(
            "emotion",
            stream,
            utterance_id=self.seq,
            start_s=1.0,
            end_s=2.0,
            text=text,
            label=label,
            scores=scores,
            modalities=["text", "audio"],
            latency_ms=120.0,
        )


@dataclasses.dataclass
class Rig:
    server: Server
    bus: ScriptBus
    hub: Hub
    log: EventLog


@asynccontextmanager
async def rig(tmp_path: Path, **server: Any) -> AsyncIterator[Rig]:
    queue = server.pop("queue_events", 100)
    config = ServerConfig(port=0, **server)
    hub = Hub(queue_events=queue)
    log = EventLog(tmp_path / "events")
    hello: Callable[[], dict[str, Any]] = lambda: {"streams": ["mic", "ep1"], "model_ids": {"asr": "tiny.en"}}  # noqa: E731
    try:
        async with Server(config, hub, log, hello) as srv:
            yield Rig(srv, ScriptBus(log, hub), hub, log)
    finally:
        log.close()


async def recv_event(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(5):
        return json.loads(await ws.recv())


async def sync(ws: ClientConnection) -> list[dict[str, Any]]:
    """Send a ping and return what arrives before its pong: every earlier message has then been applied."""
    await ws.send(json.dumps({"type": "ping"}))
    before = []
    while (ev := await recv_event(ws))["type"] != "pong":
        before.append(ev)
    return before


async def test_hello_on_connect(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, connect(r.server.ws_url) as ws:
        hello = await recv_event(ws)
        assert hello["type"] == "hello" and hello["stream"] == CONNECTION_STREAM and hello["v"] == PROTOCOL_VERSION
        data = hello["data"]
        assert data["labels"] == list(LABELS)
        assert set(data["colors"]) == set(LABELS)
        assert data["streams"] == ["mic", "ep1"]
        assert data["model_ids"] == {"asr": "tiny.en"}
        assert data["run_id"] == r.log.run_id
        assert data["last_seq"] is None and hello["seq"] == 0
        r.bus.utterance()
        r.bus.utterance()
        assert [(await recv_event(ws))["seq"] for _ in range(2)] == [0, 1]
    # hello is per connection and never logged
    assert [e.type for e in r.log.read_after(-1)] == ["emotion", "emotion"]


async def test_hello_carries_the_watermark(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        for _ in range(5):
            r.bus.utterance()
        async with connect(r.server.ws_url) as ws:
            hello = await recv_event(ws)
            assert hello["seq"] == 4 and hello["data"]["last_seq"] == 4
            r.bus.utterance()
            assert (await recv_event(ws))["seq"] == 5  # live continues right after the watermark


async def test_subscribe_filter(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, connect(r.server.ws_url) as ws:
        await recv_event(ws)
        await ws.send(json.dumps({"type": "subscribe", "streams": ["ep1"]}))
        await sync(ws)
        r.bus.utterance("mic")
        r.bus.utterance("ep1", text="only this")
        r.bus.emit("stats", SERVICE_STREAM, subscribers=1)
        r.bus.utterance("mic")
        got = await sync(ws)
        assert [(e["stream"], e["type"]) for e in got] == [("ep1", "emotion"), (SERVICE_STREAM, "stats")]
        await ws.send(json.dumps({"type": "subscribe", "streams": None}))
        await sync(ws)
        r.bus.utterance("mic")
        assert [e["stream"] for e in await sync(ws)] == ["mic"]


async def test_resume_after_reconnect_has_no_gap_and_no_duplicate(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        async with connect(r.server.ws_url) as ws:
            await recv_event(ws)
            for _ in range(10):
                r.bus.utterance()
            seen = [(await recv_event(ws))["seq"] for _ in range(10)]
        last = seen[-1]
        for _ in range(25):  # while the client is away
            r.bus.utterance()

        # Reconnect and resume while the bus keeps publishing: the race between replaying the log
        # and the live flow must neither lose nor repeat an event.
        stop = asyncio.Event()

        async def keep_publishing() -> None:
            while not stop.is_set():
                r.bus.utterance(text="x" * 200)
                await asyncio.sleep(0)

        async with connect(r.server.ws_url) as ws:
            hello = await recv_event(ws)
            assert hello["data"]["last_seq"] == 34
            publisher = asyncio.create_task(keep_publishing())
            await ws.send(json.dumps({"type": "resume", "after_seq": last}))
            got: list[int] = []
            while len(got) < 400:
                got.append((await recv_event(ws))["seq"])
            stop.set()
            await publisher
            final = r.bus.seq
            while got[-1] < final:
                got.append((await recv_event(ws))["seq"])
        # Each event exactly once. Live events that reached this connection before the server read
        # the resume request come first (they cannot be unsent); the replay skips them.
        assert sorted(got) == list(range(last + 1, final + 1))
        assert len(set(got)) == len(got)
        early = got[: got.index(last + 1)]
        assert all(s > 34 for s in early)
        assert got[len(early) :] == sorted(got[len(early) :])


async def test_a_connection_to_a_hub_behind_the_history_gets_no_live_event_its_resume_covers(tmp_path: Path) -> None:
    """A gateway reads the shared history a little behind the gateway a client comes from. The client
    holds seqs 0..2 from there; this hub has published none of 0..4 yet. Had hello gone out at once,
    0..4 would come live before the client's resume is read, and 0..2 twice."""
    hub = Hub(queue_events=100)
    log = EventLog(tmp_path / "events")
    writer = EventBus([log.append])  # logged in the shared history, not yet read by this hub
    events = [writer.emit_nowait("transcript", "ep", {"utterance_id": f"ep-{i}", "text": "x"}) for i in range(5)]

    async def read_behind() -> None:  # this gateway's reader, 0.1 s behind
        await asyncio.sleep(0.1)
        for event in events:
            hub.publish(event)

    try:
        history = LogHistory(log, lambda: events[-1].seq)
        async with Server(ServerConfig(port=0), hub, history, lambda: {}) as srv:
            reader = asyncio.create_task(read_behind())
            async with connect(srv.ws_url) as ws:
                hello = await recv_event(ws)
                await reader
                await asyncio.sleep(0.1)  # live events, if any, go out before the resume below is read
                await ws.send(json.dumps({"type": "resume", "after_seq": 2}))
                got = [e["seq"] for e in await sync(ws) if e["stream"] != CONNECTION_STREAM]
    finally:
        log.close()
    assert hello["data"]["last_seq"] == 4
    assert got == [3, 4]


async def test_resume_from_the_start_and_with_a_filter(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        for i in range(6):
            r.bus.utterance("mic" if i % 2 else "ep1")
        async with connect(r.server.ws_url) as ws:
            await recv_event(ws)
            await ws.send(json.dumps({"type": "subscribe", "streams": ["mic"]}))
            await ws.send(json.dumps({"type": "resume", "after_seq": -1}))
            replay = await sync(ws)
            assert [e["seq"] for e in replay] == [1, 3, 5]
            assert all(e["stream"] == "mic" for e in replay)


async def test_resume_beyond_the_end_is_an_error_not_a_hang(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, connect(r.server.ws_url) as ws:
        await recv_event(ws)
        r.bus.utterance()
        await ws.send(json.dumps({"type": "resume", "after_seq": 99}))
        got = await sync(ws)
        errors = [e for e in got if e["type"] == "error"]
        assert errors and errors[0]["data"]["code"] == "resume_unavailable"
        assert "99" in errors[0]["data"]["message"]
        r.bus.utterance()
        assert [e["seq"] for e in await sync(ws)] == [1]  # still live


async def test_slow_subscriber_does_not_delay_a_fast_one_and_gets_lagged(tmp_path: Path) -> None:
    total = 3000
    async with rig(tmp_path, queue_events=50) as r:
        # The slow client's library stops reading from its (small) socket after one frame, so the
        # kernel buffers fill and the server's writes to it stall: the hub must drop for it alone.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", r.server.port))
        async with connect(r.server.ws_url, sock=sock, max_queue=1) as slow, connect(r.server.ws_url) as fast:
            await recv_event(fast)
            received_fast: list[int] = []
            t0 = time.perf_counter()
            for i in range(total):
                r.bus.utterance(text=f"{i} " + "y" * 3000)
                if i % 25 == 0:
                    await asyncio.sleep(0)  # the pipeline yields now and then, like the real one
                while len(received_fast) < i - 40:  # the fast reader keeps up
                    received_fast.append((await recv_event(fast))["seq"])
            while len(received_fast) < total:
                received_fast.append((await recv_event(fast))["seq"])
            fast_s = time.perf_counter() - t0
            assert received_fast == list(range(total))  # nothing lost, no lagged
            assert fast_s < 30

            stats = r.hub.stats()
            assert stats.dropped_total > 0 and stats.lagged_subscribers == 1

            # Now the slow one reads: what it got plus what it was told it lost is exactly everything.
            got, dropped, lagged_events = 0, 0, 0
            assert (await recv_event(slow))["type"] == "hello"
            last = -1
            while last < total - 1:
                ev = await recv_event(slow)
                if ev["type"] == "lagged":
                    lagged_events += 1
                    dropped += ev["data"]["dropped"]
                    assert ev["data"]["first_seq"] > last
                else:
                    assert ev["seq"] > last  # order kept, no duplicate
                    last = ev["seq"]
                    got += 1
            assert lagged_events >= 1
            assert got + dropped == total
            assert dropped == stats.dropped_total


async def test_malformed_messages_get_error_events_and_the_connection_lives(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, connect(r.server.ws_url) as ws:
        await recv_event(ws)
        cases = [
            ("not json", "bad_message"),
            ("[1, 2]", "bad_message"),
            (json.dumps({"type": "explode"}), "bad_request"),
            (json.dumps({"type": "resume", "after_seq": "7"}), "bad_request"),
            (json.dumps({"type": "subscribe", "streams": [1]}), "bad_request"),
            (b"\xff\xfe binary junk", "bad_message"),
        ]
        for raw, code in cases:
            await ws.send(raw)
            (err,) = await sync(ws)
            assert err["type"] == "error" and err["stream"] == CONNECTION_STREAM
            assert err["data"]["code"] == code and err["data"]["message"]
        r.bus.utterance()
        assert [e["seq"] for e in await sync(ws)] == [0]


async def test_oversize_message_closes_with_1009(tmp_path: Path) -> None:
    async with rig(tmp_path, max_message_bytes=256) as r:
        async with connect(r.server.ws_url) as ws:
            await recv_event(ws)
            await ws.send(json.dumps({"type": "subscribe", "streams": ["a" * 100] * 5}))
            with pytest.raises(ConnectionClosed) as info:
                await recv_event(ws)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1009
        # The server is fine: the next client is served.
        async with connect(r.server.ws_url) as ws:
            assert (await recv_event(ws))["type"] == "hello"


async def test_connection_limit_refuses_with_a_clear_reason(tmp_path: Path) -> None:
    async with rig(tmp_path, max_connections=2) as r:
        a = await connect(r.server.ws_url)
        b = await connect(r.server.ws_url)
        await recv_event(a)
        await recv_event(b)
        async with connect(r.server.ws_url) as c:
            with pytest.raises(ConnectionClosed) as info:
                await recv_event(c)
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 1013 and "server full" in info.value.rcvd.reason
        assert r.server.refused == 1
        await a.close()
        for _ in range(100):
            if r.server.connections < 2:
                break
            await asyncio.sleep(0.02)
        async with connect(r.server.ws_url) as d:
            assert (await recv_event(d))["type"] == "hello"
        await b.close()


async def test_allowed_origins(tmp_path: Path) -> None:
    async with rig(tmp_path, allowed_origins=("https://dash.example",)) as r:
        url = r.server.ws_url
        with pytest.raises(InvalidStatus) as info:
            await connect(url, origin="https://evil.example")  # type: ignore[arg-type]
        assert info.value.response.status_code == 403
        for origin in ("https://dash.example", f"http://127.0.0.1:{r.server.port}", None):
            async with connect(url, origin=origin) as ws:  # type: ignore[arg-type]
                assert (await recv_event(ws))["type"] == "hello"


async def test_idle_client_that_never_pongs_is_dropped(tmp_path: Path) -> None:
    async with rig(tmp_path, ping_interval_s=0.1, ping_timeout_s=0.2) as r:
        # A raw socket that completes the handshake and then never reads or answers a ping.
        reader, writer = await asyncio.open_connection("127.0.0.1", r.server.port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        assert b"101" in await asyncio.wait_for(reader.readline(), 5)
        for _ in range(50):
            if r.server.connections == 1:
                break
            await asyncio.sleep(0.02)
        assert r.server.connections == 1
        for _ in range(120):  # ping 0.1 s + pong timeout 0.2 s + close timeout 2 s
            if not r.server.connections:
                break
            await asyncio.sleep(0.05)
        assert r.server.connections == 0
        writer.close()


async def http_get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


async def test_static_files_and_content_types(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        port = r.server.port
        status, headers, body = await http_get(port, "/")
        assert status == 200 and headers["content-type"].startswith("text/html")
        assert b"<html" in body.lower()
        assert int(headers["content-length"]) == len(body)
        assert headers["x-content-type-options"] == "nosniff"
        status, headers, _ = await http_get(port, "/protocol.js?v=1")
        assert status == 200 and headers["content-type"].startswith("text/javascript")
        status, headers, _ = await http_get(port, "/index.html")
        assert status == 200
        status, headers, _ = await http_get(port, "/styles.css")
        assert status == 200 and headers["content-type"].startswith("text/css")
        status, headers, _ = await http_get(port, "/favicon.svg")
        assert status == 200 and headers["content-type"] == "image/svg+xml"
        status, headers, body = await http_get(port, "/app.js", method="HEAD")
        assert status == 200 and body == b"" and int(headers["content-length"]) > 0
        status, headers, _ = await http_get(port, "/", method="POST")
        assert status == 405 and headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize(
    "path",
    [
        "/../pyproject.toml",
        "/../../../../etc/passwd",
        "/%2e%2e/pyproject.toml",
        "/..%2f..%2fetc%2fpasswd",
        "/web/../config.toml",
        "//etc/passwd",
        "/__init__.py",
        "/./index.html/..",
        "/index.html%00.js",
        "/missing.js",
        "/stream/server.py",
    ],
)
async def test_path_traversal_and_unknown_paths_are_404(tmp_path: Path, path: str) -> None:
    async with rig(tmp_path) as r:
        status, _, body = await http_get(r.server.port, path)
        assert status == 404
        assert b"root:" not in body and b"[project]" not in body


async def test_no_directory_listing(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        for path in ("/web/", "/web", "/./"):
            status, _, body = await http_get(r.server.port, path)
            assert status == 404, path
            assert b"index.html" not in body


async def test_resume_after_lagged_fills_the_gap_without_repeating(tmp_path: Path) -> None:
    async with rig(tmp_path, queue_events=3) as r, connect(r.server.ws_url) as ws:
        await recv_event(ws)
        for _ in range(10):  # in one go: the sender cannot run, so a queue of 3 overflows
            r.bus.utterance()
        lagged = await recv_event(ws)
        assert lagged["type"] == "lagged" and lagged["data"] == {"dropped": 7, "first_seq": 0, "last_seq": 6}
        got = [(await recv_event(ws))["seq"] for _ in range(3)]
        assert got == [7, 8, 9]
        await ws.send(json.dumps({"type": "resume", "after_seq": -1}))  # what the dashboard does
        got += [e["seq"] for e in await sync(ws)]
        assert sorted(got) == list(range(10)) and len(got) == 10


async def test_a_failing_hello_callback_still_greets_with_the_defaults(tmp_path: Path) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("model ids not ready")

    config = ServerConfig(port=0)
    with EventLog(tmp_path) as log:
        async with Server(config, Hub(queue_events=5), log, broken) as server, connect(server.ws_url) as ws:
            hello = await recv_event(ws)
            assert hello["type"] == "hello" and hello["data"]["labels"] == list(LABELS)
            assert hello["data"]["run_id"] == log.run_id
