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


def test_boundaries_between_lines_count_merges_by_speaker_change() -> None:
    from stream.evaluation import Utterance, boundaries_kept

    truth = read_truth_rows(TRUTH + "6.2,7.0,Good.,joy,rachel\n")  # ross, rachel, ross, rachel, rachel
    pred = [
        Utterance(0.4, 1.6, "Hi.", "joy"),
        Utterance(1.9, 4.6, "Hey. How are you?", "joy"),  # holds rachel's and ross's lines: one label for two
        Utterance(4.9, 7.1, "Fine. Good.", "joy"),  # rachel's two lines together
    ]
    kept = boundaries_kept(pred, truth)
    assert kept["all"] == {"n": 4, "merged": 2, "kept": 0.5}
    assert kept["speaker_changes"] == {"n": 3, "merged": 1, "kept": pytest.approx(2 / 3)}
    assert kept["same_speaker"] == {"n": 1, "merged": 1, "kept": 0.0}
    # A prediction that only grazes the next line (less than half of it) does not hold it.
    graze = [Utterance(0.4, 2.3, "Hi. Hey", "joy"), Utterance(2.3, 6.1, "rest", "joy")]
    assert boundaries_kept(graze, truth[:2])["speaker_changes"]["merged"] == 0
    md = report_markdown(build_report(pred, truth))
    assert "| line boundaries kept apart (no utterance holds both lines) | 2 of 4 (0.50) | |" in md
    assert "where the speaker changes / where one speaker goes on | 2 of 3 (0.67) / 0 of 1 (0.00)" in md


def test_without_speakers_only_all_boundaries_are_reported() -> None:
    rows = read_truth_rows("start_s,end_s,text,emotion\n0,1,a,joy\n1.1,2,b,joy\n")
    from stream.evaluation import Utterance

    md = report_markdown(build_report([Utterance(0, 2, "a b", "joy")], rows))
    assert "| line boundaries kept apart (no utterance holds both lines) | 0 of 1 (0.00) | |" in md
    assert "where the speaker changes" not in md
