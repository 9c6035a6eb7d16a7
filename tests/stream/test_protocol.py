"""The protocol's three descriptions agree: stream/protocol.py, docs/event.schema.json, docs/protocol.md.

Every example in protocol.md is checked against the schema and the Python parser; the schema's enums
are the module's tuples; events the real server makes (hello, pong, error, lagged) match the schema.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from websockets.asyncio.client import connect

from stream.client_messages import parse_client_message
from stream.config import ServerConfig
from stream.events.bus import EventBus
from stream.events.eventlog import EventLog
from stream.events.hub import Hub
from stream.protocol import (
    CLIENT_TYPES,
    CONNECTION_STREAM,
    ERROR_CODES,
    EVENT_TYPES,
    LABELS,
    Event,
    ProtocolError,
)
from stream.server import Server

DOCS = Path(__file__).resolve().parents[2] / "docs"
SCHEMA = json.loads((DOCS / "event.schema.json").read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def schema_errors(event: dict[str, Any]) -> list[str]:
    return [e.message for e in VALIDATOR.iter_errors(event)]


def doc_examples() -> list[dict[str, Any]]:
    text = (DOCS / "protocol.md").read_text(encoding="utf-8")
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)\n```", text, flags=re.S)]


def emotion(**over: Any) -> dict[str, Any]:
    data = {
        "utterance_id": "mic-1",
        "start_s": 1.0,
        "end_s": 2.5,
        "text": "hi",
        "label": "joy",
        "scores": {name: (0.4 if name == "joy" else 0.1) for name in LABELS},
        "modalities": ["text"],
        "latency_ms": 210.0,
    }
    data.update(over)
    return {"v": 2, "type": "emotion", "seq": 3, "stream": "mic", "ts": 1.5, "data": data}


def test_schema_is_valid_and_its_enums_are_the_module_tuples() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert tuple(SCHEMA["properties"]["type"]["enum"]) == EVENT_TYPES
    assert tuple(SCHEMA["$defs"]["error"]["properties"]["code"]["enum"]) == ERROR_CODES
    assert tuple(SCHEMA["$defs"]["label"]["enum"]) == LABELS
    assert tuple(SCHEMA["$defs"]["emotion"]["properties"]["scores"]["required"]) == LABELS
    assert {t for t in EVENT_TYPES} == {cond["if"]["properties"]["type"]["const"] for cond in SCHEMA["allOf"]}


def test_every_documented_example_is_valid() -> None:
    examples = doc_examples()
    events = [e for e in examples if "v" in e]
    messages = [e for e in examples if "v" not in e]
    assert {e["type"] for e in events} == set(EVENT_TYPES)
    for event in events:
        assert schema_errors(event) == [], event["type"]
        assert Event.from_dict(event).to_dict() == event
        if event["type"] == "emotion":
            assert sum(event["data"]["scores"].values()) == pytest.approx(1.0, abs=1e-6)
    assert {m["type"] for m in messages} == set(CLIENT_TYPES)
    for message in messages:
        parse_client_message(json.dumps(message))


@pytest.mark.parametrize(
    ("event", "why"),
    [
        ({**emotion(), "v": 1}, "version"),
        ({k: v for k, v in emotion().items() if k != "seq"}, "no seq"),
        ({**emotion(), "seq": -1}, "negative seq"),
        ({**emotion(), "seq": 1.5}, "float seq"),
        ({**emotion(), "ts": "now"}, "ts not a number"),
        ({**emotion(), "data": []}, "data not an object"),
        ({**emotion(), "type": "emotions"}, "unknown type"),
        ({**emotion(), "extra": 1}, "unknown envelope field"),
        ({**emotion(), "stream": ""}, "empty stream"),
    ],
)
def test_bad_envelopes_fail_the_schema_and_the_parser(event: dict[str, Any], why: str) -> None:
    assert schema_errors(event), why
    if why not in ("unknown type", "unknown envelope field", "empty stream"):  # the parser checks form only
        with pytest.raises(ProtocolError):
            Event.from_dict(event)


@pytest.mark.parametrize(
    "event",
    [
        emotion(label="happy"),
        emotion(scores={"joy": 1.0}),
        emotion(scores={**{n: 0.1 for n in LABELS}, "bored": 0.1}),
        emotion(scores={**{n: 0.1 for n in LABELS}, "joy": 1.5}),
        emotion(modalities=[]),
        emotion(modalities=["video"]),
        emotion(latency_ms=-1),
        emotion(start_s=-0.5),
        {k: v for k, v in emotion().items() if k != "data"} | {"data": {"label": "joy"}},
        {
            "v": 2,
            "type": "speech",
            "seq": 0,
            "stream": "mic",
            "ts": 0.0,
            "data": {"state": "begin", "utterance_id": "a", "t_s": 0},
        },
        {"v": 2, "type": "error", "seq": 0, "stream": "mic", "ts": 0.0, "data": {"code": "oops", "message": "x"}},
        {"v": 2, "type": "lagged", "seq": 0, "stream": CONNECTION_STREAM, "ts": 0.0, "data": {"dropped": 0}},
        {"v": 2, "type": "lagged", "seq": 0, "stream": "mic", "ts": 0.0, "data": {"dropped": 3}},
        {"v": 2, "type": "hello", "seq": 0, "stream": CONNECTION_STREAM, "ts": 0.0, "data": {"labels": []}},
    ],
)
def test_bad_event_data_fails_the_schema(event: dict[str, Any]) -> None:
    assert schema_errors(event)


async def test_events_made_by_the_real_server_match_the_schema(tmp_path: Path) -> None:
    hub = Hub(queue_events=2)
    with EventLog(tmp_path) as log:
        bus = EventBus([log.append, hub.publish])
        hello = {"streams": [{"id": "mic", "kind": "mic", "name": "default"}], "model_ids": {"asr": "tiny.en"}}
        async with Server(ServerConfig(port=0), hub, log, lambda: hello) as server:
            seen: list[dict[str, Any]] = []
            async with connect(server.ws_url) as ws:
                seen.append(json.loads(await ws.recv()))  # hello
                await ws.send("nonsense")
                await ws.send(json.dumps({"type": "resume", "after_seq": 5}))
                await ws.send(json.dumps({"type": "ping"}))
                for _ in range(3):
                    seen.append(json.loads(await ws.recv()))
                # Six events in one go (no await: the sender cannot run) overflow a queue of 2.
                for i in range(6):
                    bus.emit_nowait("emotion", "mic", emotion(utterance_id=f"mic-{i}")["data"])
                for _ in range(3):
                    seen.append(json.loads(await ws.recv()))
    assert [e["type"] for e in seen] == ["hello", "error", "error", "pong", "lagged", "emotion", "emotion"]
    for event in seen:
        assert schema_errors(event) == [], event
    assert seen[4]["data"] == {"dropped": 4, "first_seq": 0, "last_seq": 3}
    assert [e["seq"] for e in seen[5:]] == [4, 5]


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ({"type": "name_speaker", "stream": "mic", "speaker": "Ross", "name": "x"}, "like 'S1'"),
        ({"type": "name_speaker", "stream": "mic", "speaker": "S0", "name": "x"}, "like 'S1'"),
        ({"type": "name_speaker", "stream": "", "speaker": "S1", "name": "x"}, "stream"),
        ({"type": "name_speaker", "stream": "mic", "speaker": "S1", "name": "   "}, "visible"),
        ({"type": "name_speaker", "stream": "mic", "speaker": "S1", "name": "x" * 65}, "1-64"),
        ({"type": "name_speaker", "stream": "mic", "speaker": "S1", "name": 7}, "string"),
    ],
)
def test_bad_name_speaker_messages_are_refused(message: dict[str, Any], error: str) -> None:
    with pytest.raises(ProtocolError, match=error) as info:
        parse_client_message(json.dumps(message))
    assert info.value.code == "bad_request"


def test_name_speaker_names_are_trimmed() -> None:
    msg = parse_client_message(
        json.dumps({"type": "name_speaker", "stream": "mic", "speaker": "S12", "name": " A\n b "})
    )
    assert (msg.stream, msg.speaker, msg.name) == ("mic", "S12", "A b")


def test_speaker_events_follow_the_schema() -> None:
    base = {"v": 2, "seq": 1, "stream": "mic", "ts": 1.0, "type": "speaker"}
    assert schema_errors({**base, "data": {"action": "named", "speaker": "S1", "name": "Ross"}}) == []
    assert schema_errors({**base, "data": {"action": "merged", "speaker": "S3", "into": "S1"}}) == []
    assert schema_errors({**base, "data": {"action": "merged", "speaker": "S3"}})  # into is required
    assert schema_errors({**base, "data": {"action": "named", "speaker": "Ross", "name": "x"}})
    assert schema_errors(emotion(speaker="S2")) == [] and schema_errors(emotion(speaker=None)) == []
    assert schema_errors(emotion(speaker="ross"))
