"""`emostream evaluate` with a speaker column: truth parsing, predicted labels, merges, the report."""

from __future__ import annotations

from typing import Any

import pytest

from stream.evaluation import (
    build_report,
    predictions_from_events,
    read_truth_rows,
    report_markdown,
    speaker_corrections,
    speaker_merges,
)

TRUTH = """start_s,end_s,text,emotion,speaker
0.5,1.5,Hi.,joy,ross
2.0,3.0,Hey.,neutral,rachel
3.5,4.5,How are you?,neutral,ross
5.0,6.0,Fine.,joy,rachel
"""


def _ev(seq: int, kind: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"v": 2, "type": kind, "seq": seq, "stream": "a", "ts": float(seq), "data": data}


def _events(labels: list[str | None]) -> list[dict[str, Any]]:
    out = []
    for k, (label, (s, e)) in enumerate(zip(labels, [(0.4, 1.6), (1.9, 3.1), (3.4, 4.6), (4.9, 6.1)], strict=True)):
        uid = f"a-{k + 1}"
        out.append(_ev(3 * k, "speech", {"state": "end", "utterance_id": uid, "start_s": s, "end_s": e, "t_s": e}))
        out.append(
            _ev(3 * k + 1, "transcript", {"utterance_id": uid, "start_s": s, "end_s": e, "text": "x", "speaker": label})
        )
        out.append(
            _ev(
                3 * k + 2,
                "emotion",
                {"utterance_id": uid, "start_s": s, "end_s": e, "text": "x", "label": "joy", "speaker": label},
            )
        )
    return out


def test_the_plain_format_takes_an_optional_speaker_column() -> None:
    rows = read_truth_rows(TRUTH)
    assert [r.speaker for r in rows] == ["ross", "rachel", "ross", "rachel"]
    assert read_truth_rows("start_s,end_s,text,emotion\n0,1,a,joy\n")[0].speaker is None


def test_meld_rows_keep_their_speaker() -> None:
    meld = (
        "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime\n"
        "1,Oh my God!,Monica,surprise,positive,0,0,1,1,00:00:01,000,00:00:02,000\n"
    )
    assert (
        read_truth_rows(meld.replace("00:00:01,000", '"00:00:01,000"').replace("00:00:02,000", '"00:00:02,000"'))[
            0
        ].speaker
        == "Monica"
    )


def test_speaker_error_as_sent_and_after_merges() -> None:
    truth = read_truth_rows(TRUTH)
    events = _events(["S1", "S2", "S3", "S2"]) + [
        _ev(99, "speaker", {"action": "merged", "speaker": "S3", "into": "S1"})
    ]
    pred = predictions_from_events(events)
    assert [p.speaker for p in pred] == ["S1", "S2", "S3", "S2"]
    report = build_report(pred, truth, merges=speaker_merges(events))
    sp = report["speakers"]
    assert sp["as_sent"]["error"] == pytest.approx(0.25) and sp["as_sent"]["predicted_speakers"] == 3
    assert sp["after_merges"]["error"] == 0.0 and sp["merges"] == 1
    line = "speaker error, as sent (after 1 merges; and 0 corrections) | 0.250 (0.000; 0.000)"
    assert line in report_markdown(report)


def test_no_speaker_column_no_speaker_report() -> None:
    truth = read_truth_rows(TRUTH.replace(",speaker", "").replace(",ross", "").replace(",rachel", ""))
    assert "speakers" not in build_report(predictions_from_events(_events(["S1"] * 4)), truth)


def test_speaker_error_after_corrections() -> None:
    """A `corrected` event re-assigns one utterance: the report scores the labels as sent and as corrected."""
    truth = read_truth_rows(TRUTH)
    events = _events(["S1", "S2", "S2", "S2"]) + [
        _ev(98, "speaker", {"action": "corrected", "speaker": "S2", "into": "S3", "utterance_id": "a-3"}),
        _ev(99, "speaker", {"action": "corrected", "speaker": "S3", "into": "S1", "utterance_id": "a-3"}),
    ]
    pred = predictions_from_events(events)
    assert [p.speaker for p in pred] == ["S1", "S2", "S2", "S2"]  # as sent: corrections do not rewrite events
    assert speaker_corrections(events) == {"a-3": "S1"}  # the latest correction wins
    report = build_report(pred, truth, merges=speaker_merges(events), corrections=speaker_corrections(events))
    sp = report["speakers"]
    assert sp["as_sent"]["error"] == pytest.approx(0.25) and sp["after_merges"]["error"] == pytest.approx(0.25)
    assert sp["after_corrections"]["error"] == 0.0 and sp["corrections"] == 1
    assert "(after 0 merges; and 1 corrections) | 0.250 (0.250; 0.000)" in report_markdown(report)
