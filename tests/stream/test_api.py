"""The HTTP API on the real service (scripted models) over loopback: classify a sentence, upload a file."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from stream.api import ApiError, parse_head, stream_name
from stream.config import Config, load_config
from stream.protocol import LABELS
from tests.helpers import ScriptedPredictor, ScriptedTranscriber, make_dialogue, write_wav
from tests.helpers.service import running_service

pytestmark = pytest.mark.timeout(90)

TOKEN = "api-test-token-0123456789"


def config(tmp_path: Path, **server: Any) -> Config:
    cfg = load_config(None, **{"log.event_log_dir": str(tmp_path / "events"), "audio.replay_fast": True})
    upload_dir = str(tmp_path / "uploads")
    return dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, port=0, upload_dir=upload_dir, **server))


@asynccontextmanager
async def service(tmp_path: Path, *, predictor: ScriptedPredictor | None = None, **server: Any) -> AsyncIterator[Any]:
    wav = write_wav(tmp_path / "talk.wav", make_dialogue(["Good morning."]).audio)
    models = ScriptedTranscriber(default="I am so happy"), predictor or ScriptedPredictor(keywords={"happy": "joy"})
    async with running_service(
        config(tmp_path, **server), [str(wav)], models, start_timeout_s=30, stop_timeout_s=30
    ) as srv:
        yield srv


async def request(
    port: int, method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = {"Host": f"127.0.0.1:{port}", "Content-Length": str(len(body)), **(headers or {})}
    lines = "".join(f"{k}: {v}\r\n" for k, v in head.items())
    writer.write(f"{method} {target} HTTP/1.1\r\n{lines}\r\n".encode() + body)
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 20)
    writer.close()
    status_line, _, rest = raw.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), (json.loads(payload) if payload else {})


def classify_body(text: Any) -> bytes:
    return json.dumps({"text": text}).encode()


async def test_classify_a_sentence(tmp_path: Path) -> None:
    async with service(tmp_path) as server:
        status, body = await request(server.port, "POST", "/api/classify", classify_body("  I am so   happy! "))
        assert status == 200, body
        assert body["label"] == "joy" and body["modalities"] == ["text"] and body["text"] == "I am so happy!"
        assert set(body["scores"]) == set(LABELS) and sum(body["scores"].values()) == pytest.approx(1.0)


async def test_classify_errors_have_the_websockets_shape(tmp_path: Path) -> None:
    async with service(tmp_path, max_message_bytes=256) as server:
        port = server.port
        cases = [
            (b"{not json", 400, "bad_message"),
            (b"[1]", 400, "bad_message"),
            (classify_body(None), 400, "bad_request"),
            (classify_body("   "), 400, "bad_request"),
            (classify_body("x" * 300), 413, "bad_message"),  # over server.max_message_bytes, like the websocket
        ]
        for raw, want_status, want_code in cases:
            status, body = await request(port, "POST", "/api/classify", raw)
            assert (status, body["error"]["code"]) == (want_status, want_code), (raw[:20], body)
            assert body["error"]["message"]
        status, body = await request(port, "GET", "/api/classify")
        assert status == 405
        status, body = await request(port, "POST", "/api/nothing", b"{}")
        assert status == 404 and "/api/classify" in body["error"]["message"]
        status, body = await request(
            port, "POST", "/api/classify", classify_body("hi"), {"Origin": "http://evil.example"}
        )
        assert status == 403 and body["error"]["code"] == "forbidden"
        own = {"Origin": f"http://localhost:{port}"}
        assert (await request(port, "POST", "/api/classify", classify_body("hi"), own))[0] == 200


async def test_classify_runs_off_the_event_loop(tmp_path: Path) -> None:
    """A slow classifier does not hold up the websocket: a ping is answered while it works."""
    predictor = ScriptedPredictor(delay_s=1.0)
    async with service(tmp_path, predictor=predictor) as server, connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
        await ws.recv()  # hello
        call = asyncio.create_task(request(server.port, "POST", "/api/classify", classify_body("hello")))
        await asyncio.sleep(0.2)  # the classifier is busy now
        t0 = time.perf_counter()
        await ws.send(json.dumps({"type": "ping"}))
        while json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] != "pong":
            pass
        assert time.perf_counter() - t0 < 0.5
        assert not call.done()
        assert (await call)[0] == 200


async def test_the_token_guards_the_api(tmp_path: Path) -> None:
    async with service(tmp_path, host="0.0.0.0", token=TOKEN) as server:
        status, body = await request(server.port, "POST", "/api/classify", classify_body("hi"))
        assert status == 401 and body["error"]["code"] == "unauthorized"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert (await request(server.port, "POST", "/api/classify", classify_body("hi"), auth))[0] == 200


async def test_upload_replays_the_file_as_a_new_stream(tmp_path: Path) -> None:
    clip = write_wav(tmp_path / "clip.wav", make_dialogue(["Hello there.", "I am so happy."]).audio).read_bytes()
    async with service(tmp_path, max_upload_mb=1, keep_uploads=True) as server:
        port = server.port
        async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.recv()  # hello
            await ws.send(json.dumps({"type": "subscribe", "streams": ["my-clip"]}))
            status, body = await request(port, "POST", "/api/streams?name=my%20clip", clip)
            assert status == 201, body
            assert body == {"stream": "my-clip", "name": "my clip", "kind": "file", "bytes": len(clip)}
            got: list[dict[str, Any]] = []
            while not got or got[-1]["type"] != "end":
                event = json.loads(await asyncio.wait_for(ws.recv(), 20))
                if event["stream"] == "my-clip":
                    got.append(event)
        assert [e["data"]["label"] for e in got if e["type"] == "emotion"] == ["joy", "joy"]
        assert got[-1]["data"]["reason"] == "eof"
        (stored,) = (tmp_path / "uploads").glob("*/my-clip-*.upload")
        assert stored.read_bytes() == clip and stored.parent.name == server.event_log.run_id
        # the same name again: a new stream id
        status, body = await request(port, "POST", "/api/streams?name=my%20clip", clip)
        assert status == 201 and body["stream"] == "my-clip-2"
        async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            hello = json.loads(await ws.recv())
            assert {"id": "my-clip-2", "kind": "file", "name": "my clip"} in hello["data"]["streams"]


async def test_an_upload_is_deleted_once_its_stream_has_ended(tmp_path: Path) -> None:
    clip = write_wav(tmp_path / "clip.wav", make_dialogue(["I am so happy."]).audio).read_bytes()
    async with service(tmp_path, max_upload_mb=1) as server:
        async with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
            await ws.recv()  # hello
            await ws.send(json.dumps({"type": "subscribe", "streams": ["gone"]}))
            status, body = await request(server.port, "POST", "/api/streams?name=gone", clip)
            assert status == 201, body
            got: list[dict[str, Any]] = []
            while not got or got[-1]["type"] != "end":
                event = json.loads(await asyncio.wait_for(ws.recv(), 20))
                if event["stream"] == "gone":
                    got.append(event)
        assert [e["data"]["label"] for e in got if e["type"] == "emotion"] == ["joy"]
        for _ in range(100):
            if not list((tmp_path / "uploads").glob("*/gone-*")):
                break
            await asyncio.sleep(0.05)
        assert not list((tmp_path / "uploads").glob("*/gone-*")), "the upload outlived its stream"


async def test_upload_refusals(tmp_path: Path) -> None:
    async with service(tmp_path, max_upload_mb=1) as server:
        port = server.port
        status, body = await request(port, "POST", "/api/streams?name=big", b"\0" * ((1 << 20) + 1))
        assert status == 413 and "server.max_upload_mb" in body["error"]["message"]
        status, body = await request(port, "POST", "/api/streams?name=notes", b"this is not audio at all" * 10)
        assert status == 415 and "not a media file" in body["error"]["message"]
        status, body = await request(port, "POST", "/api/streams", b"RIFF")
        assert status == 400 and "name" in body["error"]["message"]
        status, body = await request(port, "POST", "/api/streams?name=_service", b"RIFF")
        assert status == 400
        status, body = await request(port, "POST", "/api/streams?name=x", b"")
        assert status == 400 and "empty" in body["error"]["message"]
    assert not list((tmp_path / "uploads").glob("*/*"))  # refused uploads leave nothing behind


def test_parse_head_and_names() -> None:
    req = parse_head(b"POST /api/streams?name=a%20b HTTP/1.1\r\nHost: x\r\nContent-Length: 3")
    assert (req.method, req.path, req.query, req.headers["content-length"]) == (
        "POST",
        "/api/streams",
        {"name": ["a b"]},
        "3",
    )
    for bad in (b"POST", b"POST /x HTTP/2", b"POST x HTTP/1.1", b"POST /x HTTP/1.1\r\nno colon"):
        with pytest.raises(ApiError):
            parse_head(bad)
    assert stream_name(" Ep 1 (final).mp4 ") == "Ep-1-final-.mp4"
    with pytest.raises(ApiError):
        stream_name("///")


async def test_expect_100_continue_as_curl_sends_it(tmp_path: Path) -> None:
    async with service(tmp_path) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        body = classify_body("I am so happy")
        head = f"POST /api/classify HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nExpect: 100-continue\r\n"
        writer.write(head.encode() + b"\r\n")
        assert await asyncio.wait_for(reader.readline(), 5) == b"HTTP/1.1 100 Continue\r\n"
        await reader.readline()
        writer.write(body)
        raw = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert raw.startswith(b"HTTP/1.1 200 OK") and b'"label":"joy"' in raw


async def test_a_request_head_must_come_whole_and_in_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import stream.server

    monkeypatch.setattr(stream.server, "_HEAD_TIMEOUT_S", 0.5)
    async with service(tmp_path) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST /api/classify HTTP/1.1\r\nHost: x\r\n")  # ... and never the rest
        t0 = time.perf_counter()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # dropped
        assert time.perf_counter() - t0 < 3
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET / HTTP/1.1\r\nX-Junk: " + b"a" * 20000 + b"\r\n\r\n")
        raw = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert raw.startswith(b"HTTP/1.1 431")
        # the server still answers
        assert (await request(server.port, "POST", "/api/classify", classify_body("hi")))[0] == 200


async def test_sentences_beyond_the_waiting_limit_are_told_busy(tmp_path: Path) -> None:
    async with service(tmp_path, predictor=ScriptedPredictor(delay_s=0.3)) as server:
        server.api.max_classify_waiting = 2
        calls = [
            asyncio.create_task(request(server.port, "POST", "/api/classify", classify_body("hi"))) for _ in range(5)
        ]
        statuses = sorted(status for status, _ in await asyncio.gather(*calls))
        assert statuses.count(200) == 2 and statuses.count(429) == 3
        assert (await request(server.port, "POST", "/api/classify", classify_body("hi")))[0] == 200  # free again
