"""EventBus: seq/ts assignment, fan-out, a failing sink isolated; the JSONL writer; console lines."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from stream.events.bus import EventBus, JsonlWriter
from stream.events.console import ConsolePrinter, format_event
from stream.protocol import Event


async def test_seq_is_strictly_increasing_and_ts_comes_from_the_clock() -> None:
    ticks = iter([100.0, 100.5, 101.25])
    got: list[Event] = []
    bus = EventBus([got.append], clock=lambda: next(ticks))
    a = await bus.emit("speech", "s1", {"state": "start"})
    b = await bus.emit("speech", "s2", {"state": "end"})
    c = bus.emit_nowait("end", "s1", {})
    assert [e.seq for e in (a, b, c)] == [0, 1, 2]
    assert [e.ts for e in got] == [100.0, 100.5, 101.25]
    assert got == [a, b, c]
    assert a.to_dict() == {"v": 2, "type": "speech", "seq": 0, "stream": "s1", "ts": 100.0, "data": {"state": "start"}}
    assert bus.last_seq == 2
    assert bus.counts == {"speech": 2, "end": 1}


async def test_a_failing_sink_is_counted_and_does_not_break_the_others(caplog: pytest.LogCaptureFixture) -> None:
    first: list[int] = []
    last: list[int] = []

    def broken(event: Event) -> None:
        raise OSError("disk full")

    bus = EventBus([lambda e: first.append(e.seq), broken, lambda e: last.append(e.seq)])
    with caplog.at_level(logging.ERROR, logger="stream.events.bus"):
        for _ in range(3):
            await bus.emit("stats", "_service", {})
    assert first == last == [0, 1, 2]
    assert sum(bus.sink_errors.values()) == 3
    assert len([r for r in caplog.records if "failed" in r.getMessage()]) == 1  # logged once with traceback


async def test_data_is_copied_so_later_mutation_does_not_change_the_event() -> None:
    bus = EventBus()
    data = {"text": "a"}
    event = await bus.emit("transcript", "s", data)
    data["text"] = "b"
    assert event.data["text"] == "a"


async def test_jsonl_writer_writes_one_parseable_line_per_event(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "events.jsonl"
    writer = JsonlWriter(path)
    bus = EventBus([writer])
    await bus.emit("emotion", "mic", {"label": "joy", "text": "héllo"})
    await bus.emit("end", "mic", {"reason": "eof"})
    # Flushed per line: readable before close.
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [0, 1]
    assert json.loads(lines[0])["data"]["text"] == "héllo"
    writer.close()
    with pytest.raises(RuntimeError, match="closed"):
        writer(Event("end", 2, "mic", 0.0))


def test_console_line_for_an_emotion_has_time_label_score_and_text() -> None:
    event = Event(
        "emotion",
        3,
        "demo",
        1_700_000_000.25,
        {
            "utterance_id": "demo-1",
            "start_s": 0.5,
            "end_s": 2.0,
            "text": "I am so happy",
            "label": "joy",
            "scores": {"joy": 0.81, "neutral": 0.19},
            "modalities": ["text", "audio"],
            "latency_ms": 420.0,
        },
    )
    line = format_event(event)
    assert "\n" not in line
    for part in ("JOY", "0.81", "I am so happy", "demo", "text+audio", "420 ms", ":"):
        assert part in line


@pytest.mark.parametrize(
    ("kind", "data", "needle"),
    [
        ("transcript", {"text": "", "dropped": "no_speech", "start_s": 0, "end_s": 1}, "dropped: no_speech"),
        ("speech", {"state": "start", "utterance_id": "a-1", "t_s": 1.5}, "start a-1"),
        ("error", {"code": "device_lost", "message": "gone"}, "device_lost: gone"),
        ("end", {"reason": "eof", "audio_s": 12.0}, "eof"),
        ("stats", {"queues": {"utterances": 2}, "rtf": {"asr": 0.3}}, "utterances=2"),
        ("hello", {"streams": [{"id": "mic"}]}, "mic"),
        ("lagged", {"dropped": 3}, "lagged"),
    ],
)
def test_console_has_one_line_for_every_event_type(kind: str, data: dict[str, object], needle: str) -> None:
    out = io.StringIO()
    ConsolePrinter(out)(Event(kind, 0, "s", 0.0, data))
    text = out.getvalue()
    assert text.count("\n") == 1 and needle in text


def test_console_quiet_mode_skips_bookkeeping_events() -> None:
    out = io.StringIO()
    printer = ConsolePrinter(out, verbose=False)
    printer(Event("stats", 0, "_service", 0.0, {}))
    printer(Event("error", 1, "s", 0.0, {"code": "internal", "message": "x"}))
    assert out.getvalue().count("\n") == 1
