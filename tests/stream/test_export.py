"""Subtitles and CSV from an event log: parsed back, read by ffmpeg, written live by `emostream run --srt`."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from stream.cli import main
from stream.config import load_config
from stream.events.eventlog import read_events
from stream.export import ExportError, SubtitleWriter, cues_from_events, export_file, to_csv, to_srt, to_vtt
from stream.protocol import LABELS, Event
from stream.service import RunOptions, run_service
from tests.helpers import ScriptedPredictor, ScriptedTranscriber, make_dialogue, requires_ffmpeg, write_wav

UTTERANCES = (
    # (start, end, text, label, speaker)
    (1.25, 3.5, "I can't believe we won!", "joy", "Rachel"),
    (4.0, 5.125, "Wait --> what?", "surprise", {"id": "spk2", "name": "Ross"}),
    (6.5, 9.0, "=SUM(A1:A9) & <b>not bold</b>", "anger", None),
    (3661.5, 3663.0, "", "sadness", None),  # an hour in; judged from the voice alone
)


def _scores(label: str) -> dict[str, float]:
    return {k: (0.82 if k == label else 0.03) for k in LABELS}


def make_events(stream: str = "ep1") -> list[Event]:
    events: list[Event] = []
    seq = 0

    def add(kind: str, s: str, data: dict[str, Any]) -> None:
        nonlocal seq
        events.append(Event(kind, seq, s, 1764030000.0 + seq, data))
        seq += 1

    add("stats", "_service", {"utterances": 0})
    for i, (start, end, text, label, speaker) in enumerate(UTTERANCES, 1):
        uid = f"{stream}-{i}"
        span = {"utterance_id": uid, "start_s": start, "end_s": end}
        add("speech", stream, {"state": "end", **span})
        tr = {**span, "text": text, "language": "en"}
        if speaker is not None:
            tr["speaker"] = speaker
        add("transcript", stream, tr)
        add("emotion", stream, {**span, "text": text, "label": label, "scores": _scores(label), "modalities": ["text"]})
    # a transcript whose classification failed: still a cue, without an emotion
    add("transcript", stream, {"utterance_id": f"{stream}-9", "start_s": 10.0, "end_s": 11.0, "text": "Okay."})
    # speakers found by clustering: S3 turned out to be S1, who was then named
    for i, label in ((5, "S1"), (6, "S3")):
        span = {"utterance_id": f"{stream}-{i}", "start_s": 20.0 + i, "end_s": 20.5 + i}
        add("emotion", stream, {**span, "speaker": label, "text": f"Line {i}.", "label": "neutral",
                                "scores": _scores("neutral"), "modalities": ["text", "audio"]})  # fmt: skip
    add("speaker", stream, {"action": "merged", "speaker": "S3", "into": "S1", "utterance_id": f"{stream}-6"})
    add("speaker", stream, {"action": "named", "speaker": "S1", "name": "Monica"})
    # an utterance sent as S2 (Ross) was re-assigned to S1 (Monica) once the clustering knew more
    span = {"utterance_id": f"{stream}-7", "start_s": 30.0, "end_s": 31.0}
    add("emotion", stream, {**span, "speaker": "S2", "text": "Line 7.", "label": "neutral",
                            "scores": _scores("neutral"), "modalities": ["text"]})  # fmt: skip
    add("speaker", stream, {"action": "corrected", "speaker": "S2", "into": "S1", "utterance_id": f"{stream}-7"})
    return events


SRT_BLOCK = re.compile(r"(\d+)\n(\d\d):(\d\d):(\d\d),(\d{3}) --> (\d\d):(\d\d):(\d\d),(\d{3})\n((?:.+\n)+)\n")


def parse_srt(text: str) -> list[tuple[int, float, float, list[str]]]:
    blocks = []
    pos = 0
    for m in SRT_BLOCK.finditer(text):
        assert m.start() == pos, f"unparsed SRT text at {pos}: {text[pos : m.start()]!r}"
        pos = m.end()
        g = m.groups()
        start = int(g[1]) * 3600 + int(g[2]) * 60 + int(g[3]) + int(g[4]) / 1000
        end = int(g[5]) * 3600 + int(g[6]) * 60 + int(g[7]) + int(g[8]) / 1000
        blocks.append((int(g[0]), start, end, g[9].rstrip("\n").split("\n")))
    assert pos == len(text), f"trailing SRT text: {text[pos:]!r}"
    return blocks


def test_cues_merge_transcripts_and_emotions() -> None:
    cues = cues_from_events(make_events())
    ids = ["ep1-1", "ep1-2", "ep1-3", "ep1-9", "ep1-5", "ep1-6", "ep1-7", "ep1-4"]
    assert [c.utterance_id for c in cues] == ids
    assert [c.speaker for c in cues] == ["Rachel", "Ross", "", "", "Monica", "Monica", "Monica", ""]
    assert cues[0].label == "joy" and cues[0].score == pytest.approx(0.82)
    assert cues[3].label == "" and cues[3].text == "Okay."


def test_srt_parses_back() -> None:
    blocks = parse_srt(to_srt(cues_from_events(make_events())))
    assert [b[0] for b in blocks] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert blocks[0][1:3] == (1.25, 3.5)
    assert blocks[0][3] == ["Rachel: I can't believe we won!", "(joy 82%)"]
    assert blocks[1][3][0] == "Ross: Wait -> what?"  # an arrow in the words cannot break the timing line
    assert blocks[3][3] == ["Okay."]
    assert blocks[4][3] == ["Monica: Line 5.", "(neutral 82%)"]  # S1, named later
    assert blocks[5][3] == ["Monica: Line 6.", "(neutral 82%)"]  # S3, merged into S1
    assert blocks[6][3] == ["Monica: Line 7.", "(neutral 82%)"]  # sent as S2, corrected to S1
    assert blocks[7][1:3] == (3661.5, 3663.0) and blocks[7][3] == ["(no words)", "(sadness 82%)"]


def test_vtt_escapes_and_names_the_voice() -> None:
    text = to_vtt(cues_from_events(make_events()))
    assert text.startswith("WEBVTT\n\n")
    assert "<v Rachel>I can't believe we won!</v>\n(joy 82%)" in text
    assert "=SUM(A1:A9) &amp; &lt;b&gt;not bold&lt;/b&gt;" in text
    assert "01:01:01.500 --> 01:01:03.000" in text


def test_csv_opens_as_a_table_and_quotes_formulas() -> None:
    rows = list(csv.DictReader(io.StringIO(to_csv(cues_from_events(make_events())))))
    assert len(rows) == 8
    assert rows[0]["emotion"] == "joy" and rows[0]["score"] == "0.8200" and rows[0]["speaker"] == "Rachel"
    assert rows[0]["start"] == "00:00:01.250" and float(rows[0]["score_joy"]) == pytest.approx(0.82)
    assert rows[2]["text"].startswith("'=SUM")  # not run as a formula by a spreadsheet
    assert rows[3]["emotion"] == "" and rows[3]["score"] == ""
    assert rows[5]["speaker"] == "Monica"


def test_subtitles_need_one_stream() -> None:
    cues = cues_from_events(make_events("a") + make_events("b"))
    with pytest.raises(ExportError, match="choose one with --stream"):
        to_srt(cues)
    assert len(parse_srt(to_srt(cues_from_events(make_events("a") + make_events("b"), stream="b")))) == 8


def _write_log(path: Path, events: list[Event]) -> Path:
    path.write_text("".join(e.to_json() + "\n" for e in events), encoding="utf-8")
    return path


def test_cli_export_writes_each_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = _write_log(tmp_path / "events.jsonl", make_events())
    for fmt in ("srt", "vtt", "csv"):
        out = tmp_path / f"out.{fmt}"
        assert main(["export", str(log), "--format", fmt, "--out", str(out)]) == 0
        assert "wrote 8 utterances" in capsys.readouterr().out
    assert (tmp_path / "out.csv").read_bytes().startswith(b"\xef\xbb\xbf")  # BOM: spreadsheets read UTF-8
    assert len(parse_srt((tmp_path / "out.srt").read_text(encoding="utf-8"))) == 8
    assert main(["export", str(tmp_path / "none.jsonl"), "--format", "srt", "--out", str(tmp_path / "x")]) == 1
    assert "no such event log" in capsys.readouterr().err
    assert main(["export", str(log), "--format", "srt", "--out", str(tmp_path / "x"), "--stream", "zz"]) == 1
    assert "streams: ep1" in capsys.readouterr().err
    with pytest.raises(ExportError, match="unknown format"):
        export_file(log, "ass", tmp_path / "x")


def _ffprobe_packets(path: Path) -> list[tuple[float, float]]:
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "packet=pts_time,duration_time", "-of", "json", str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    packets = json.loads(probe.stdout)["packets"]
    return [(float(p["pts_time"]), float(p["duration_time"])) for p in packets]


@requires_ffmpeg
@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe is not installed (apt-get install ffmpeg)")
def test_ffmpeg_reads_the_subtitles(tmp_path: Path) -> None:
    log = _write_log(tmp_path / "events.jsonl", make_events())
    for fmt in ("srt", "vtt"):
        out = tmp_path / f"subs.{fmt}"
        export_file(log, fmt, out)
        packets = _ffprobe_packets(out)
        assert len(packets) == 8, fmt
        assert packets[0] == pytest.approx((1.25, 2.25)), fmt
        assert packets[-1] == pytest.approx((3661.5, 1.5)), fmt
        # and converts them (what a player's subtitle decoder does)
        ass = tmp_path / f"subs-{fmt}.ass"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(out), str(ass)], check=True, capture_output=True)
        assert "I can't believe we won!" in ass.read_text(encoding="utf-8")


def test_subtitle_writer_writes_cue_by_cue(tmp_path: Path) -> None:
    (a,) = SubtitleWriter.for_streams(tmp_path / "live.srt", ["ep1"])
    for event in make_events():
        a(event)
        if event.type == "emotion" and a.count == 1:
            assert len(parse_srt((tmp_path / "live.srt").read_text())) == 1  # flushed at once
    a.close()
    assert [b[0] for b in parse_srt((tmp_path / "live.srt").read_text())] == [1, 2, 3, 4, 5, 6, 7]
    two = SubtitleWriter.for_streams(tmp_path / "live.srt", ["a", "b/c"])
    assert [w.path.name for w in two] == ["live.a.srt", "live.b-c.srt"]
    for w in two:
        w.close()


async def test_run_with_srt_writes_the_subtitles_of_the_replay(tmp_path: Path) -> None:
    talk = make_dialogue(["Hello there, my friend.", "What a lovely day."])
    wav = write_wav(tmp_path / "ep.wav", talk.audio)
    cfg = load_config(None, **{"log.event_log_dir": str(tmp_path / "events"), "audio.replay_fast": True})
    cfg = dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, enabled=False))
    srt = tmp_path / "ep.srt"
    models = ScriptedTranscriber(default="I am so happy"), ScriptedPredictor(keywords={"happy": "joy"})
    options = RunOptions(sources=(str(wav),), srt=str(srt), quiet=True)
    assert await asyncio.wait_for(run_service(cfg, options, models=models), 60) == 0
    blocks = parse_srt(srt.read_text(encoding="utf-8"))
    assert [b[3] for b in blocks] == [["I am so happy", "(joy 70%)"]] * 2
    for (_, start, end, _), (a, b) in zip(blocks, talk.spans_s(), strict=True):
        assert start <= a + 0.05 and end >= b - 0.05  # the cue covers the spoken line
    # the same as exporting the run's event log afterwards
    (log,) = (tmp_path / "events").glob("events-*.jsonl")
    assert to_srt(cues_from_events(read_events(log))) == srt.read_text(encoding="utf-8")


def test_subtitle_writer_uses_the_names_known_so_far(tmp_path: Path) -> None:
    (w,) = SubtitleWriter.for_streams(tmp_path / "live.srt", ["ep1"])
    span = {"utterance_id": "ep1-1", "start_s": 1.0, "end_s": 2.0}
    emo = {**span, "speaker": "S1", "text": "Hi.", "label": "joy", "scores": _scores("joy"), "modalities": ["text"]}
    w(Event("speaker", 0, "ep1", 1.0, {"action": "named", "speaker": "S1", "name": "Joey"}))  # enrolled at the start
    w(Event("emotion", 1, "ep1", 2.0, emo))
    w.close()
    assert parse_srt((tmp_path / "live.srt").read_text())[0][3] == ["Joey: Hi.", "(joy 82%)"]
