"""Browser ingest: the source on its own, then the real service (scripted models) with real ws clients."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from stream.client_messages import parse_ingest_message
from stream.config import Config, load_config
from stream.protocol import ProtocolError
from stream.records import AudioChunk
from stream.sources.ingest import IngestSource
from tests.helpers import ScriptedPredictor, ScriptedTranscriber, make_dialogue, write_wav
from tests.helpers.service import running_service

pytestmark = pytest.mark.timeout(90)


def test_ingest_messages() -> None:
    start = parse_ingest_message('{"type": "start", "stream": "my mic", "sample_rate_hz": 48000.0}')
    assert (start.type, start.stream, start.sample_rate_hz) == ("start", "my mic", 48000)
    assert parse_ingest_message('{"type": "stop"}').type == "stop"
    bad = [
        b"\x00\x01",
        "nope",
        '{"type": "go"}',
        '{"type": "start", "stream": "", "sample_rate_hz": 48000}',
        '{"type": "start", "stream": "m", "sample_rate_hz": 4000}',
        '{"type": "start", "stream": "m", "sample_rate_hz": true}',
        '{"type": "start", "stream": "m"}',
    ]
    for raw in bad:
        with pytest.raises(ProtocolError):
            parse_ingest_message(raw)


async def test_source_resamples_and_keeps_a_continuous_timeline() -> None:
    src = IngestSource("m", name="m", sample_rate_hz=48000, buffer_s=5.0)
    tone = (np.sin(np.arange(48000) * 2 * np.pi * 440 / 48000) * 8000).astype(np.int16)
    for block in np.split(tone, 20):  # 50 ms frames
        await src.push(block)
    src.finish()
    chunks = [c async for c in src]
    assert all(isinstance(c, AudioChunk) for c in chunks)
    starts = [c.start_sample for c in chunks]  # type: ignore[union-attr]
    ends = [c.end_sample for c in chunks]  # type: ignore[union-attr]
    assert starts[0] == 0 and starts[1:] == ends[:-1]  # no gap, no overlap
    assert abs(ends[-1] - 16000) <= 64  # one second at 16 kHz (the resampler's delay aside)
    pcm = np.concatenate([c.pcm for c in chunks])  # type: ignore[union-attr]
    spectrum = np.abs(np.fft.rfft(pcm[1000:15000].astype(np.float64)))
    assert abs(np.argmax(spectrum) * 16000 / 14000 - 440) < 3  # still a 440 Hz tone


async def test_source_pushes_back_when_its_buffer_is_full() -> None:
    src = IngestSource("m", name="m", sample_rate_hz=16000, buffer_s=0.5)
    block = np.zeros(1600, dtype=np.int16)  # 100 ms
    for _ in range(5):
        await src.push(block)
    blocked = asyncio.create_task(src.push(block))
    await asyncio.sleep(0.05)
    assert not blocked.done() and src.waits == 1  # 0.5 s queued: the pusher waits
    reader = aiter(src)
    await anext(reader)  # the pipeline takes one block: room again
    await asyncio.wait_for(blocked, 1)
    assert src.stats()["buffered_s"] == pytest.approx(0.5)


# -- the real service ----------------------------------------------------------------------------


def config(tmp_path: Path, **server: Any) -> Config:
    cfg = load_config(None, **{"log.event_log_dir": str(tmp_path / "events"), "audio.replay_fast": True})
    return dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, port=0, **server))


@asynccontextmanager
async def service(tmp_path: Path, **server: Any) -> AsyncIterator[Any]:
    idle = write_wav(tmp_path / "idle.wav", np.zeros(1600, dtype=np.float32))
    models = ScriptedTranscriber(default="I am so happy"), ScriptedPredictor(keywords={"happy": "joy"})
    async with running_service(
        config(tmp_path, **server), [str(idle)], models, start_timeout_s=30, stop_timeout_s=30
    ) as srv:
        yield srv


def pcm48k(lines: list[str]) -> bytes:
    talk = make_dialogue(lines, lead_s=0.5, gap_s=1.0, tail_s=0.2)
    up = np.interp(np.arange(talk.audio.size * 3) / 3, np.arange(talk.audio.size), talk.audio)
    return (np.clip(up, -1, 1) * 32767).astype("<i2").tobytes()


async def start_ingest(port: int, name: str = "page mic", rate: int = 48000, **kw: Any) -> tuple[ClientConnection, str]:
    ws = await connect(f"ws://127.0.0.1:{port}/ingest", **kw)
    await ws.send(json.dumps({"type": "start", "stream": name, "sample_rate_hz": rate}))
    reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert reply["type"] == "started", reply
    return ws, reply["stream"]


async def send_audio(ws: ClientConnection, data: bytes, frame_bytes: int = 4800) -> None:
    for i in range(0, len(data), frame_bytes):
        await ws.send(data[i : i + frame_bytes])
        if i % (frame_bytes * 10) == 0:
            await asyncio.sleep(0)  # let the service read (it is not paced: faster than real time)


async def events_of(port: int, stream: str, until: str = "end") -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "resume", "after_seq": -1}))
        while not (got and got[-1]["type"] == until):
            event = json.loads(await asyncio.wait_for(ws.recv(), 20))
            if event["stream"] == stream:
                got.append(event)
    return got


async def test_speech_sent_to_ingest_becomes_a_stream_with_emotions(tmp_path: Path) -> None:
    async with service(tmp_path) as server:
        port = server.port
        ws, stream = await start_ingest(port)
        assert stream == "page-mic"
        watcher = asyncio.create_task(events_of(port, stream))
        await send_audio(ws, pcm48k(["Hello there, my friend.", "What a lovely day."]))
        await ws.send(json.dumps({"type": "stop"}))
        got = await asyncio.wait_for(watcher, 30)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 1000
        emotions = [e for e in got if e["type"] == "emotion"]
        assert len(emotions) == 2 and all(e["data"]["label"] == "joy" for e in emotions)
        assert 0.1 < emotions[0]["data"]["start_s"] < 0.5  # 0.5 s lead minus the 0.3 s pre-roll, at 16 kHz
        assert got[-1]["type"] == "end" and got[-1]["data"]["reason"] == "eof"
        # the stream is in hello, and a second one from the same name gets its own id
        async with connect(f"ws://127.0.0.1:{port}/ws") as sub:
            streams = json.loads(await sub.recv())["data"]["streams"]
        assert {"id": "page-mic", "kind": "browser", "name": "page mic"} in streams
        ws2, stream2 = await start_ingest(port)
        assert stream2 == "page-mic-2"
        await ws2.close()


async def test_a_closed_tab_ends_the_stream_with_its_last_words(tmp_path: Path) -> None:
    async with service(tmp_path) as server:
        ws, stream = await start_ingest(server.port, rate=48000)
        watcher = asyncio.create_task(events_of(server.port, stream))
        await send_audio(ws, pcm48k(["See you tomorrow then."]))  # ends 0.2 s after the speech
        await ws.close(1001, "tab closed")  # no stop message
        got = await asyncio.wait_for(watcher, 30)
        assert [e["type"] for e in got].count("emotion") == 1 and got[-1]["data"]["reason"] == "eof"


async def test_ingest_limits(tmp_path: Path) -> None:
    async with service(
        tmp_path, ingest_max_streams=2, ingest_streams_per_client=1, ingest_max_frame_bytes=2048
    ) as server:
        port = server.port
        ws, _ = await start_ingest(port)
        # a second stream from the same client address: refused, said in words, closed 1013
        async with connect(f"ws://127.0.0.1:{port}/ingest") as again:
            reply = json.loads(await asyncio.wait_for(again.recv(), 5))
            assert reply["type"] == "error" and "per client" in reply["message"]
            with pytest.raises(ConnectionClosed):
                await again.recv()
            assert again.close_code == 1013
        # a frame over ingest_max_frame_bytes: 1009
        await ws.send(b"\0" * 4096)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 1009
        # a bad start message: an error and 1008
        async with connect(f"ws://127.0.0.1:{port}/ingest") as bad:
            await bad.send(json.dumps({"type": "start", "stream": "x", "sample_rate_hz": 1}))
            reply = json.loads(await asyncio.wait_for(bad.recv(), 5))
            assert reply["type"] == "error" and "sample_rate_hz" in reply["message"]
            with pytest.raises(ConnectionClosed):
                await bad.recv()
            assert bad.close_code == 1008
        # an odd byte count is not int16: the stream ends with an error event
        ws, stream = await start_ingest(port, name="odd")
        watcher = asyncio.create_task(events_of(port, stream))
        await ws.send(b"\0" * 1001)
        got = await asyncio.wait_for(watcher, 20)
        assert any(e["type"] == "error" and "even byte count" in e["data"]["message"] for e in got)
        # a browser page from another site cannot open one
        with pytest.raises(InvalidStatus) as info:
            await connect(f"ws://127.0.0.1:{port}/ingest", origin="http://evil.example")  # type: ignore[arg-type]
        assert info.value.response.status_code == 403


async def test_a_silent_page_is_ended_after_the_idle_timeout(tmp_path: Path) -> None:
    async with service(tmp_path, ingest_idle_timeout_s=0.5) as server:
        ws, stream = await start_ingest(server.port, name="quiet")
        got = await asyncio.wait_for(events_of(server.port, stream), 20)
        assert "ingest_idle_timeout_s" in next(e for e in got if e["type"] == "error")["data"]["message"]
        assert got[-1]["type"] == "end"
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
