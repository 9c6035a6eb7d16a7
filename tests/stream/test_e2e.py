"""End to end with the real packaged weights on espeak-ng speech made here.

``emostream run`` as a user runs it (a subprocess), on an mp4 with a video track: every sentence is
found once, the transcript is close (WER < 25 %), and every ``emotion`` event is well-formed and
timed inside its sentence. Then the default ``make run`` shape: server + dashboard up, SIGINT -> 0.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from stream.protocol import LABELS
from tests.helpers import ASR_COMPUTE_TYPES, make_dialogue, make_video_mp4, word_error_rate, write_wav

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT = ROOT / "models" / "emostream-default.pt"
SCHEMA = ROOT / "docs" / "event.schema.json"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHECKPOINT.is_file(), reason=f"no classifier checkpoint at {CHECKPOINT} (train one)"),
]

SENTENCES = [
    "I can't believe you lied to me again.",
    "Thank you so much, this is a wonderful gift.",
    "The train leaves at seven in the morning.",
]


def emostream(*args: str, tmp_path: Path, compute_type: str = "auto") -> list[str]:
    """The CLI with a config that keeps this run's event log under ``tmp_path``."""
    config = tmp_path / "config.toml"
    config.write_text(f'[log]\nevent_log_dir = "{tmp_path / "events"}"\n[asr]\ncompute_type = "{compute_type}"\n')
    return [sys.executable, "-m", "stream", *args, "--config", str(config), "--checkpoint", str(CHECKPOINT)]


def env(tmp_path: Path) -> dict[str, str]:
    return dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT))


def check_schema(events: list[dict[str, Any]]) -> None:
    if not SCHEMA.is_file():
        return
    import jsonschema

    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    for event in events:
        errors = list(validator.iter_errors(event))
        assert not errors, f"{event['type']}: {errors[0].message}"


@pytest.mark.parametrize("compute_type", ASR_COMPUTE_TYPES)  # the words differ between CPUs: see conftest
def test_cli_on_an_mp4_finds_every_line_with_close_text_and_timed_emotions(tmp_path: Path, compute_type: str) -> None:
    talk = make_dialogue(SENTENCES, lead_s=0.6, gap_s=1.2, tail_s=1.0)
    mp4 = make_video_mp4(tmp_path / "episode.mp4", write_wav(tmp_path / "talk.wav", talk.audio))
    jsonl = tmp_path / "events.jsonl"
    cmd = emostream(
        "run",
        "--source",
        str(mp4),
        "--fast",
        "--no-server",
        "--quiet",
        "--jsonl",
        str(jsonl),
        "--asr-model",
        "tiny.en",
        "--device",
        "cpu",
        tmp_path=tmp_path,
        compute_type=compute_type,
    )
    proc = subprocess.run(
        cmd, env=env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    events = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [e["seq"] for e in events] == list(range(len(events)))
    check_schema(events)
    emotions = [e for e in events if e["type"] == "emotion"]
    # Each line is one utterance or, where Whisper reads a finished sentence at a pause inside it (the end
    # of turn check; "Thank you so much." + "This is a wonderful gift."), one per sentence: never two lines
    # in one, never a line missed.
    spans = talk.spans_s()
    line_of = [next((i for i, (s0, s1) in enumerate(spans) if s0 <= mid <= s1), None) for mid in
               ((e["data"]["start_s"] + e["data"]["end_s"]) / 2 for e in emotions)]  # fmt: skip
    assert sorted(set(line_of) - {None}) == list(range(len(SENTENCES))) and None not in line_of, line_of
    assert len(emotions) <= 2 * len(SENTENCES), [e["data"]["text"] for e in emotions]
    for emo, line in zip(emotions, line_of, strict=True):
        d = emo["data"]
        s0, s1 = spans[line]
        assert emo["stream"] == "episode"
        # Words are bounded on the whole transcript, below: one line's words differ between CPUs.
        assert d["text"].strip(), (SENTENCES[line], d)
        assert d["label"] in LABELS and set(d["scores"]) == set(LABELS)
        assert abs(sum(d["scores"].values()) - 1.0) < 1e-3
        assert d["scores"][d["label"]] == max(d["scores"].values())
        assert set(d["modalities"]) <= {"text", "audio"} and d["modalities"]
        assert d["latency_ms"] >= 0
        # Timed inside its line (allowing the VAD's pre/post-roll and AAC's encoder delay).
        assert s0 - 0.5 <= d["start_s"] and d["end_s"] <= s1 + 0.8
    total_wer = word_error_rate(" ".join(SENTENCES), " ".join(e["data"]["text"] for e in emotions))
    assert total_wer < 0.25, [e["data"]["text"] for e in emotions]
    (end,) = [e for e in events if e["type"] == "end"]
    assert end["seq"] > emotions[-1]["seq"] and end["data"]["reason"] == "eof"
    # The run's event log holds exactly the same events.
    (log,) = (tmp_path / "events").glob("events-*.jsonl")
    assert [json.loads(line) for line in log.read_text().splitlines()] == events


def test_run_serves_the_dashboard_and_exits_0_on_sigint(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "hello.wav", make_dialogue(["Hello, nice to meet you."]).audio)
    cmd = emostream(
        "run", "--source", str(wav), "--port", "0", "--asr-model", "tiny.en", "--device", "cpu", tmp_path=tmp_path
    )
    proc = subprocess.Popen(
        cmd, env=env(tmp_path), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stderr is not None
        url = None
        deadline = time.monotonic() + 120
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            if "dashboard at " in line:
                url = line.split("dashboard at ", 1)[1].split()[0]
        assert url, "the service never announced the dashboard"
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.status == 200 and b"<html" in resp.read().lower()
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert "speech   start hello-1" in out  # the readable per-event lines on stdout
