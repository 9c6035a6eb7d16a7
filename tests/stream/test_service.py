"""The service: --source parsing, a full run with scripted models (no server / with a real server on
loopback and a websocket client), the JSONL and event-log outputs, clean stop."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from stream.config import Config, load_config
from stream.events.eventlog import read_events
from stream.protocol import LABELS, PROTOCOL_VERSION, Event
from stream.service import DEMO_PATH, RunOptions, SourceError, parse_sources, run_service
from tests.helpers import ScriptedPredictor, ScriptedTranscriber, make_dialogue, write_wav

SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "event.schema.json"


def validate_against_schema(events: list[dict[str, Any]]) -> None:
    """Check events against docs/event.schema.json once it exists (written with the server)."""
    if not SCHEMA.is_file():
        return
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    for event in events:
        errors = sorted(validator.iter_errors(event), key=str)
        assert not errors, f"{event['type']} event does not match {SCHEMA.name}: {errors[0].message}"


def test_sources_parse_to_unique_stream_ids(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "ep 1.wav", make_dialogue(["Hi."]).audio)
    specs = parse_sources(["mic", "2", "USB Audio", str(wav), str(wav)])
    assert [(s.stream_id, s.kind) for s in specs] == [
        ("mic", "mic"),
        ("mic2", "mic"),
        ("mic-USB-Audio", "mic"),
        ("ep-1", "file"),
        ("ep-1-2", "file"),
    ]
    assert specs[2].target == "USB Audio" and specs[3].target == str(wav)
    (demo,) = parse_sources([])
    assert demo.kind == "file" and Path(demo.target) == DEMO_PATH and DEMO_PATH.is_file()
    with pytest.raises(SourceError, match="no such file"):
        parse_sources([str(tmp_path / "missing.mp4")])
    with pytest.raises(SourceError, match="empty"):
        parse_sources([" "])


def config(tmp_path: Path, **server: Any) -> Config:
    cfg = load_config(None, **{"log.event_log_dir": str(tmp_path / "events"), "audio.replay_fast": True})
    return dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, port=0, **server))


def models() -> tuple[Any, Any]:
    return ScriptedTranscriber(default="I am so happy"), ScriptedPredictor(keywords={"happy": "joy"})


async def test_no_server_run_exits_0_after_the_files_with_every_event_written(tmp_path: Path) -> None:
    a = write_wav(tmp_path / "a.wav", make_dialogue(["Hello there, my friend.", "What a lovely day."]).audio)
    b = write_wav(tmp_path / "b.wav", make_dialogue(["See you tomorrow then."]).audio)
    out = io.StringIO()
    cfg = config(tmp_path, enabled=False)
    options = RunOptions(sources=(str(a), str(b)), jsonl=str(tmp_path / "ev.jsonl"))
    status = await asyncio.wait_for(run_service(cfg, options, models=models(), out=out), 60)
    assert status == 0
    lines = [json.loads(line) for line in (tmp_path / "ev.jsonl").read_text().splitlines()]
    assert [e["seq"] for e in lines] == list(range(len(lines)))
    assert all(e["v"] == PROTOCOL_VERSION and isinstance(e["ts"], float) for e in lines)
    assert {e["stream"] for e in lines if e["type"] == "end"} == {"a", "b"}
    assert [e["stream"] for e in lines if e["type"] == "emotion"].count("a") == 2
    assert all(e["data"]["label"] == "joy" for e in lines if e["type"] == "emotion")
    validate_against_schema(lines)
    # The same events, in the same order, went to the run's event log and to stdout.
    (log,) = (tmp_path / "events").glob("events-*.jsonl")
    assert [e.to_dict() for e in read_events(log)] == lines
    printed = out.getvalue().splitlines()
    assert len(printed) == len(lines) and sum("JOY" in p for p in printed) == 3


async def test_a_missing_source_file_is_refused_before_anything_starts(tmp_path: Path) -> None:
    options = RunOptions(sources=(str(tmp_path / "nope.wav"),))
    assert await run_service(config(tmp_path, enabled=False), options, models=models()) == 2


async def test_a_missing_checkpoint_exits_1_with_an_error_event(tmp_path: Path) -> None:
    cfg = config(tmp_path, enabled=False)
    cfg = dataclasses.replace(cfg, classifier=dataclasses.replace(cfg.classifier, checkpoint=str(tmp_path / "x.pt")))
    options = RunOptions(sources=(str(DEMO_PATH),), jsonl=str(tmp_path / "ev.jsonl"), quiet=True)
    assert await run_service(cfg, options) == 1
    (event,) = [json.loads(line) for line in (tmp_path / "ev.jsonl").read_text().splitlines()]
    assert event["type"] == "error" and "x.pt" in event["data"]["message"]


async def test_with_the_server_a_websocket_client_gets_hello_and_the_events_and_stop_exits_0(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "talk.wav", make_dialogue(["Good morning everyone.", "I am so happy today."]).audio)
    cfg = config(tmp_path)
    cfg = dataclasses.replace(cfg, audio=dataclasses.replace(cfg.audio, replay_fast=False, replay_speed=4.0))
    stop = asyncio.Event()
    ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_service(
            cfg, RunOptions(sources=(str(wav),), quiet=True), models=models(), stop=stop, on_ready=ready.set_result
        )
    )
    server = await asyncio.wait_for(ready, 30)
    received: list[dict[str, Any]] = []
    async with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
        hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert hello["type"] == "hello"
        assert hello["data"]["labels"] == list(LABELS)
        assert hello["data"]["streams"] == [{"id": "talk", "kind": "file", "name": str(wav)}]
        assert hello["data"]["model_ids"] == {"asr": "scripted-asr", "classifier": "scripted"}
        assert set(hello["data"]["colors"]) == set(LABELS)
        while not any(e["type"] == "end" for e in received):
            received.append(json.loads(await asyncio.wait_for(ws.recv(), 20)))
    assert not task.done()  # keeps serving after the file ended
    stop.set()
    assert await asyncio.wait_for(task, 20) == 0
    emotions = [e for e in received if e["type"] == "emotion"]
    assert len(emotions) == 2 and emotions[1]["data"]["label"] == "joy"
    assert 0 <= emotions[0]["data"]["latency_ms"] < 5000
    validate_against_schema(received)
    assert all(Event.from_dict(e).seq >= 0 for e in received)


async def test_exit_when_done_with_the_server_up(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "x.wav", make_dialogue(["Hello."]).audio)
    options = RunOptions(sources=(str(wav),), exit_when_done=True, quiet=True)
    assert await asyncio.wait_for(run_service(config(tmp_path), options, models=models()), 60) == 0
