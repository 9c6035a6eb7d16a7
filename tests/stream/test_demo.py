"""The bundled demo (`emostream run`'s default recording) labels 7 of 7 lines with Whisper base.

The demo is the first thing a new user sees, on whatever CPU they have. CTranslate2's int8 kernels
hear the odd word differently on different CPU families; float32 takes another kernel path that
disagrees in the same way. The demo's lines (scripts/make-demo.sh) carry their emotion in several
words each, so the labels must survive both. Most lines are two or three sentences, and the end-of-turn
check (on by default) ends an utterance at each sentence: every line must still be found, its longest
sentence must carry its emotion, and no utterance may reach across two lines.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from stream.config import load_config
from stream.evaluation import build_report, load_truth, predictions_from_events, read_jsonl, replay
from tests.helpers import ASR_COMPUTE_TYPES, word_error_rate

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "stream" / "assets" / "demo.flac"
TRUTH = ROOT / "stream" / "assets" / "demo.csv"
CHECKPOINT = ROOT / "models" / "emostream-default.pt"


def test_the_demo_truth_has_one_line_per_emotion() -> None:
    with TRUTH.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["emotion"] for r in rows) == sorted(
        ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"]
    )
    starts = [float(r["start_s"]) for r in rows]
    ends = [float(r["end_s"]) for r in rows]
    assert all(a < b for a, b in zip(starts, ends, strict=True))
    assert all(end + 1.0 <= start for end, start in zip(ends, starts[1:], strict=False))  # gaps the VAD can see


@pytest.mark.slow
@pytest.mark.skipif(not CHECKPOINT.is_file(), reason=f"no classifier checkpoint at {CHECKPOINT}")
@pytest.mark.parametrize("compute_type", ASR_COMPUTE_TYPES)
def test_the_demo_shows_7_of_7_with_base(compute_type: str, tmp_path: Path) -> None:
    config = load_config(
        None,
        **{
            "asr.model": "base",
            "asr.device": "cpu",
            "asr.compute_type": compute_type,
            "classifier.checkpoint": str(CHECKPOINT),
            "classifier.device": "cpu",
            "log.event_log_dir": str(tmp_path / "events"),
        },
    )
    events_path = tmp_path / "events.jsonl"
    replay(config, DEMO, events_path)
    events = read_jsonl(events_path)
    truth = load_truth([str(TRUTH)])
    report = build_report(predictions_from_events(events), truth, oracle=None, min_overlap=0.5, extra={})
    emotions = [e["data"] for e in events if e["type"] == "emotion"]
    heard = [(d["label"], d["text"]) for d in emotions]
    assert report["counts"]["matched"] == len(truth) <= len(emotions), heard
    assert report["emotion"]["accuracy"] == 1.0, heard
    # One utterance per sentence at most: none reaches across two lines (1.2 s of silence between them).
    spans = [(d["start_s"], d["end_s"]) for d in emotions]
    for a, b in spans:
        assert sum(a < t.end_s and b > t.start_s for t in truth) == 1, (a, b, heard)
    # The words may differ between CPUs; together they stay close to the script.
    assert word_error_rate(" ".join(t.text for t in truth), " ".join(d["text"] for d in emotions)) < 0.25, heard
