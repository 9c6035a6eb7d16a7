"""Replay evaluation: truth parsing, alignment, WER and metrics as pure logic; the CLI on prepared events."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.cli import main
from stream.evaluation import (
    TruthError,
    Utterance,
    WordErrors,
    align,
    build_report,
    emotion_scores,
    load_truth,
    normalise_words,
    parse_timestamp,
    predictions_from_events,
    read_truth_rows,
    report_markdown,
    word_errors,
)
from stream.protocol import LABELS

MELD_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "meld"
MELD_HEADER = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime\n"


def u(start: float, end: float, text: str = "", emotion: str | None = None, uid: str = "") -> Utterance:
    return Utterance(start, end, text, emotion, uid)


# --------------------------------------------------------------------------- timestamps


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("00:16:16,059", 976.059),
        ("0:12:43,012", 763.012),
        ("00:00:00,000", 0.0),
        ("1:00:00,5", 3600.5),
        ("12:43.25", 763.25),  # mm:ss.fff, as some subtitle tools write it
        (" 00:00:03,294 ", 3.294),
    ],
)
def test_parse_timestamp(raw: str, seconds: float) -> None:
    assert parse_timestamp(raw) == pytest.approx(seconds)


@pytest.mark.parametrize("raw", ["", "16,059", "00:61:00,000", "00:00:75,000", "a:b:c", "00:16:16;059"])
def test_parse_timestamp_rejects_and_names_the_value(raw: str) -> None:
    with pytest.raises(ValueError, match="timestamp"):
        parse_timestamp(raw)


# --------------------------------------------------------------------------- truth files


def test_meld_rows_are_filtered_to_one_episode_and_timed() -> None:
    text = MELD_HEADER + (
        '1,"Oh my God, he’s lost it.",Phoebe,sadness,negative,0,0,4,7,"00:20:57,256","00:21:00,049"\n'
        '2,What?,Monica,surprise,negative,0,1,4,7,"0:21:01,927","0:21:03,261"\n'
        '3,Hi.,Joey,joy,positive,1,0,2,3,"00:00:01,000","00:00:02,000"\n'
    )
    rows = read_truth_rows(text, source="dev_sent_emo.csv", season=4, episode=7)
    assert [(r.start_s, r.end_s, r.emotion) for r in rows] == [
        (pytest.approx(1257.256), pytest.approx(1260.049), "sadness"),
        (pytest.approx(1261.927), pytest.approx(1263.261), "surprise"),
    ]
    assert rows[0].uid == "dev_sent_emo/dia0_utt0"
    with pytest.raises(TruthError, match="spans 2 episodes.*--season S --episode E"):
        read_truth_rows(text, source="dev.csv")
    assert read_truth_rows(text, season=4, episode=8) == []


def test_meld_mojibake_is_repaired_and_bad_rows_are_named() -> None:
    good = MELD_HEADER + '1,Heâ€™s here.,Ross,neutral,neutral,0,0,1,1,"00:00:01,000","00:00:02,000"\n'
    assert read_truth_rows(good)[0].text == "He's here."  # training.data.repair_text, as the model read it
    bad_time = MELD_HEADER + '1,Hi.,Ross,neutral,neutral,0,0,1,1,"00:00:01","soon"\n'
    with pytest.raises(TruthError, match="line 2.*'soon'"):
        read_truth_rows(bad_time, source="x.csv")
    bad_label = MELD_HEADER + '1,Hi.,Ross,contempt,neutral,0,0,1,1,"00:00:01,000","00:00:02,000"\n'
    with pytest.raises(TruthError, match="x.csv line 2: unknown emotion 'contempt'"):
        read_truth_rows(bad_label, source="x.csv")


def test_plain_rows_offsets_unlabelled_and_backwards_spans() -> None:
    text = "start_s,end_s,text,emotion\n0.5,1.5,Hello there.,Joy\n2,3,No label,\n5,4,backwards,anger\n"
    rows = read_truth_rows(text, offset_s=10.0)
    assert rows == [
        Utterance(10.5, 11.5, "Hello there.", "joy", "row2"),
        Utterance(12.0, 13.0, "No label", None, "row3"),
    ]  # the backwards row is skipped with a warning


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("a,b,c\n1,2,3\n", "neither MELD's"),
        ("start_s,end_s,text,emotion\nzero,1,hi,joy\n", "line 2"),
        ("start_s,end_s,text,emotion\n1,2\n", "line 2"),
        ("start_s,end_s,text,emotion\n-1,2,hi,joy\n", "non-negative"),
        ("start_s,end_s,text,emotion\nnan,2,hi,joy\n", "finite"),
    ],
)
def test_plain_rows_errors(text: str, match: str) -> None:
    with pytest.raises(TruthError, match=match):
        read_truth_rows(text)


def test_season_filter_on_a_plain_file_is_an_error() -> None:
    with pytest.raises(TruthError, match="MELD CSVs only"):
        read_truth_rows("start_s,end_s,text,emotion\n", season=1)


def test_load_truth_merges_files_dedupes_and_sorts(tmp_path: Path) -> None:
    a = tmp_path / "a.csv"
    b = tmp_path / "b.csv"
    a.write_text("start_s,end_s,text,emotion\n3,4,later,joy\n0,1,first,anger\n", encoding="utf-8")
    b.write_text("\ufeffstart_s,end_s,text,emotion\n0,1,first,anger\n1.5,2,middle,\n", encoding="utf-8")
    rows = load_truth([a, b])
    assert [r.text for r in rows] == ["first", "middle", "later"]
    with pytest.raises(TruthError, match="not found"):
        load_truth([tmp_path / "missing.csv"])
    (tmp_path / "empty.csv").write_text("start_s,end_s,text,emotion\n", encoding="utf-8")
    with pytest.raises(TruthError, match="no ground-truth utterances"):
        load_truth([tmp_path / "empty.csv"])


@pytest.mark.skipif(not (MELD_DIR / "dev_sent_emo.csv").is_file(), reason=f"MELD CSVs not found in {MELD_DIR}")
def test_real_meld_episode_across_splits() -> None:
    files = [MELD_DIR / f"{s}_sent_emo.csv" for s in ("train", "dev", "test")]
    rows = load_truth(files, season=3, episode=5)
    assert len(rows) > 100
    assert all(r.emotion in LABELS for r in rows)
    assert [r.start_s for r in rows] == sorted(r.start_s for r in rows)
    assert {r.uid.split("/")[0] for r in rows} >= {"train_sent_emo"}


# --------------------------------------------------------------------------- alignment


def test_align_empty_and_exact() -> None:
    assert align([], []) == []
    assert align([u(0, 1)], []) == []
    truth = [u(0, 1), u(2, 3)]
    assert [(m.pred, m.truth) for m in align(truth, truth)] == [(0, 0), (1, 1)]


def test_align_merged_prediction_matches_one_truth_only() -> None:
    truth = [u(0, 1), u(1.2, 2.0)]
    pred = [u(-0.1, 2.1)]
    matches = align(pred, truth)
    assert len(matches) == 1
    assert matches[0].truth == 0  # both fully covered; the longer overlap wins


def test_align_split_truth_leaves_one_false_positive() -> None:
    truth = [u(0, 4)]
    pred = [u(0.0, 1.0), u(1.5, 3.8)]
    assert [(m.pred, m.truth) for m in align(pred, truth)] == [(1, 0)]


def test_align_beats_greedy_when_the_biggest_overlap_is_a_trap() -> None:
    # Greedy by overlap would pair p0-t1 (0.9 s) and leave both t0 and p1 unmatched.
    truth = [u(0.0, 1.0), u(1.1, 2.0)]
    pred = [u(0.5, 2.0), u(1.7, 2.0)]
    assert [(m.pred, m.truth) for m in align(pred, truth)] == [(0, 0), (1, 1)]


def test_align_min_overlap_is_a_fraction_of_the_shorter_span() -> None:
    truth = [u(0.0, 2.0)]
    assert len(align([u(1.0, 3.0)], truth, min_overlap=0.5)) == 1  # 1 s of 2 s
    assert align([u(1.01, 3.0)], truth, min_overlap=0.5) == []
    assert len(align([u(1.9, 2.0)], truth, min_overlap=1.0)) == 1  # a short prediction inside a long truth
    assert align([u(2.0, 3.0)], truth, min_overlap=0.01) == []  # touching is not overlapping
    with pytest.raises(ValueError, match="min_overlap"):
        align([], [], min_overlap=0.0)


def _intervals(draw: st.DrawFn, n: int) -> list[Utterance]:
    out, t = [], 0.0
    for _ in range(n):
        t += draw(st.floats(0.0, 2.0))
        dur = draw(st.floats(0.05, 3.0))
        out.append(u(t, t + dur))
        t += dur
    return out


@st.composite
def _timelines(draw: st.DrawFn) -> tuple[list[Utterance], list[Utterance], float]:
    return (
        _intervals(draw, draw(st.integers(0, 7))),
        _intervals(draw, draw(st.integers(0, 7))),
        draw(st.sampled_from([0.1, 0.5, 0.9])),
    )


@settings(max_examples=200, deadline=None)
@given(_timelines())
def test_align_is_one_to_one_eligible_and_maximum(case: tuple[list[Utterance], list[Utterance], float]) -> None:
    """On disjoint timelines the order-keeping matching is a maximum matching (checked by brute force)."""
    optimize = pytest.importorskip("scipy.optimize")
    import numpy as np

    pred, truth, frac = case
    matches = align(pred, truth, min_overlap=frac)
    assert len({m.pred for m in matches}) == len({m.truth for m in matches}) == len(matches)

    def eligible(p: Utterance, t: Utterance) -> bool:
        ov = max(0.0, min(p.end_s, t.end_s) - max(p.start_s, t.start_s))
        return ov > 0 and ov >= frac * min(p.end_s - p.start_s, t.end_s - t.start_s) - 1e-9

    assert all(eligible(pred[m.pred], truth[m.truth]) for m in matches)
    if pred and truth:
        cost = np.array([[-1.0 if eligible(p, t) else 0.0 for t in truth] for p in pred])
        rows, cols = optimize.linear_sum_assignment(cost)
        assert len(matches) == int(-cost[rows, cols].sum())


# --------------------------------------------------------------------------- word error rate


def test_normalise_words() -> None:
    assert normalise_words("He’s  lost-it!  ÉCOLE…") == ["hes", "lost", "it", "école"]
    assert normalise_words("he's") == normalise_words("hes") == normalise_words("He's,")
    assert normalise_words(" .. ") == []


def test_word_errors_counts() -> None:
    w = word_errors("the cat sat on the mat", "the cat sit on mat")
    assert (w.substitutions, w.deletions, w.insertions, w.ref_words) == (1, 1, 0, 6)
    assert w.wer == pytest.approx(2 / 6)
    assert word_errors("Oh my God!", "oh, my god").wer == 0.0
    assert word_errors("a b", "").deletions == 2
    assert word_errors("", "").wer == 0.0
    assert word_errors("", "uh huh").wer == float("inf")
    assert word_errors("a", "b c d").errors == 3
    total = word_errors("a b", "a") + word_errors("c", "c d")
    assert total == WordErrors(0, 1, 1, 3)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from("abcd"), max_size=8), st.lists(st.sampled_from("abcd"), max_size=8))
def test_word_errors_matches_plain_levenshtein(ref: list[str], hyp: list[str]) -> None:
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i]
        for j, h in enumerate(hyp, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h)))
        prev = cur
    w = word_errors(ref, hyp)
    assert w.errors == prev[-1]
    assert w.ref_words == len(ref)
    assert w.deletions - w.insertions == len(ref) - len(hyp)


# --------------------------------------------------------------------------- emotion metrics


def test_emotion_scores_by_hand() -> None:
    s = emotion_scores(["joy", "joy", "anger", "neutral"], ["joy", "anger", "anger", "neutral"])
    assert s.accuracy == 0.75
    assert s.per_class_f1 == {"anger": pytest.approx(2 / 3), "joy": pytest.approx(2 / 3), "neutral": 1.0}
    assert s.weighted_f1 == pytest.approx((2 / 3 * 2 + 2 / 3 + 1.0) / 4)
    assert s.macro_f1 == pytest.approx((2 / 3 + 2 / 3 + 1.0) / 3)
    joy, anger = LABELS.index("joy"), LABELS.index("anger")
    assert s.confusion[joy][anger] == 1
    assert sum(map(sum, s.confusion)) == 4
    empty = emotion_scores([], [])
    assert (empty.n, empty.weighted_f1, empty.macro_f1) == (0, 0.0, 0.0)
    with pytest.raises(ValueError, match="unknown label 'calm'"):
        emotion_scores(["calm"], ["joy"])
    with pytest.raises(ValueError, match="2 truth labels but 1"):
        emotion_scores(["joy", "joy"], ["joy"])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(LABELS), st.sampled_from(LABELS)), min_size=1, max_size=40))
def test_emotion_scores_agree_with_scikit_learn(pairs: list[tuple[str, str]]) -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    truth, pred = [t for t, _ in pairs], [p for _, p in pairs]
    s = emotion_scores(truth, pred)
    assert s.weighted_f1 == pytest.approx(metrics.f1_score(truth, pred, average="weighted", zero_division=0))
    assert s.macro_f1 == pytest.approx(metrics.f1_score(truth, pred, average="macro", zero_division=0))
    assert [list(r) for r in s.confusion] == metrics.confusion_matrix(truth, pred, labels=list(LABELS)).tolist()


# --------------------------------------------------------------------------- events and report


def _emotion(seq: int, start: float, end: float, text: str, label: str, *, stream: str = "a") -> dict[str, object]:
    data = {
        "utterance_id": f"{stream}-{seq}",
        "start_s": start,
        "end_s": end,
        "text": text,
        "label": label,
        "scores": {k: 1.0 / 7 for k in LABELS},
        "modalities": ["text"],
        "latency_ms": 100.0 * seq,
    }
    return {"v": 2, "type": "emotion", "seq": seq, "stream": stream, "ts": 1.0 * seq, "data": data}


def test_predictions_from_events_keeps_emotion_events_of_one_stream() -> None:
    events = [
        {"v": 2, "type": "speech", "seq": 0, "stream": "a", "ts": 0.0, "data": {"state": "start"}},
        _emotion(2, 3.0, 4.0, "later", "joy"),
        _emotion(1, 0.5, 1.5, "first", "anger"),
    ]
    preds = predictions_from_events(events)
    assert [(p.text, p.emotion, p.latency_ms) for p in preds] == [("first", "anger", 100.0), ("later", "joy", 200.0)]
    events.append(_emotion(3, 0.0, 1.0, "other", "joy", stream="b"))
    with pytest.raises(ValueError, match="2 streams"):
        predictions_from_events(events)
    assert [p.text for p in predictions_from_events(events, stream="b")] == ["other"]


def test_predictions_join_speech_transcript_and_emotion_by_utterance() -> None:
    def ev(kind: str, seq: int, **data: object) -> dict[str, object]:
        return {"v": 2, "type": kind, "seq": seq, "stream": "a", "ts": float(seq), "data": data}

    events = [
        ev("speech", 0, state="start", utterance_id="a-1", t_s=0.2),
        ev("speech", 1, state="end", utterance_id="a-1", start_s=0.2, end_s=1.9, forced=False),
        ev("speech", 2, state="end", utterance_id="a-2", start_s=3.0, end_s=4.0, forced=False),
        ev("transcript", 3, utterance_id="a-1", start_s=0.2, end_s=1.9, text="Hello there."),
        ev("emotion", 4, utterance_id="a-1", start_s=0.2, end_s=1.9, text="Hello there.", label="joy",
           latency_ms=420.5),
        ev("transcript", 5, utterance_id="a-2", start_s=3.0, end_s=4.0, text="Bye."),
        ev("error", 6, code="stage_failed", message="classification failed", utterance_id="a-2"),
    ]  # fmt: skip
    preds = predictions_from_events(events)
    assert preds == [
        Utterance(0.2, 1.9, "Hello there.", "joy", "a-1", 420.5),
        Utterance(3.0, 4.0, "Bye.", None, "a-2", None),  # found and transcribed, but not classified
    ]
    with pytest.raises(ValueError, match="speech event seq 9 has no usable start_s"):
        predictions_from_events([ev("speech", 9, state="end", utterance_id="x", start_s="soon", end_s=1)])


def test_build_report_numbers() -> None:
    truth = [
        u(0, 1, "hello there", "joy", "t0"),
        u(2, 3, "go away", "anger", "t1"),
        u(4, 5, "fine", None, "t2"),
        u(6, 7, "what", "surprise", "t3"),
    ]
    pred = [
        u(0.1, 1.1, "hello their", "joy", "p0"),
        u(2.0, 3.2, "go away", "sadness", "p1"),
        u(4.1, 4.9, "fine", "neutral", "p2"),
        u(9, 10, "uh", "neutral", "p3"),
    ]
    report = build_report(pred, truth, oracle=["joy", "anger", "neutral", "joy"])
    assert report["counts"] == {"truth": 4, "predicted": 4, "matched": 3, "unclassified": 0}
    assert report["detection"]["precision"] == 0.75
    assert report["detection"]["recall"] == 0.75
    assert report["wer"]["matched"] == pytest.approx(1 / 5)
    assert report["wer"]["overall_counts"]["ref_words"] == 6
    assert report["emotion"]["n"] == 2  # the unlabelled truth t2 is not scored
    assert report["emotion"]["accuracy"] == 0.5
    assert report["text_oracle"]["matched"]["accuracy"] == 1.0
    assert report["text_oracle"]["all_truth"]["n"] == 3
    assert report["timing"]["start_offset_s"]["median"] == pytest.approx(0.1)
    md = report_markdown(report)
    assert "| detection recall | 0.750 |" in md
    assert "| emotion weighted-F1 |" in md
    assert "| anger | 0 | 0 | 0 | 0 | 0 | 1 | 0 |" in md
    with pytest.raises(ValueError, match="oracle has 1 labels for 4"):
        build_report(pred, truth, oracle=["joy"])


def test_report_is_strict_json_when_nothing_matches() -> None:
    report = build_report([u(0, 1, "uh", "joy")], [u(5, 6, "", "joy")])
    assert report["wer"]["overall"] is None  # insertions against an empty reference: infinite
    json.dumps(report, allow_nan=False)
    assert "| utterances (truth / predicted / matched) | 1 / 1 / 0 |" in report_markdown(report)


# --------------------------------------------------------------------------- CLI on prepared events


def test_cli_scores_prepared_events(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    truth = tmp_path / "truth.csv"
    truth.write_text("start_s,end_s,text,emotion\n0.5,1.5,Hello there.,joy\n3,4,Go away.,anger\n", encoding="utf-8")
    events = tmp_path / "events.jsonl"
    lines = [_emotion(1, 0.4, 1.6, "Hello there.", "joy"), _emotion(2, 3.1, 4.2, "Go away", "neutral")]
    events.write_text("".join(json.dumps(e) + "\n" for e in lines), encoding="utf-8")
    out = tmp_path / "r" / "report.json"
    rc = main(["evaluate", "--truth", str(truth), "--events", str(events), "--no-oracle", "--json", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["counts"]["matched"] == 2
    assert report["wer"]["matched"] == 0.0
    assert report["emotion"]["accuracy"] == 0.5
    assert "| detection precision | 1.000 |" in capsys.readouterr().out


@pytest.mark.parametrize(
    "command",
    [
        "emostream",
        # export loads the shipped checkpoint (packaged MiniLM weights) to print its metadata
        pytest.param("emostream-train", marks=pytest.mark.slow),
    ],
)
def test_a_closed_stdout_ends_the_cli_quietly(tmp_path: Path, command: str) -> None:
    """``emostream evaluate ... | head``: no BrokenPipeError traceback, the SIGPIPE exit status."""
    truth = tmp_path / "truth.csv"
    truth.write_text("start_s,end_s,text,emotion\n0.5,1.5,Hello there.,joy\n", encoding="utf-8")
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(_emotion(1, 0.4, 1.6, "Hello there.", "joy")) + "\n", encoding="utf-8")
    if command == "emostream":
        code = "from stream.cli import main"
        argv = ["evaluate", "--truth", str(truth), "--events", str(events), "--no-oracle"]
    else:
        if not CHECKPOINT.is_file():
            pytest.skip(f"no trained checkpoint at {CHECKPOINT}")
        code = "from training.cli import main"
        argv = ["export", "--checkpoint", str(CHECKPOINT), "--out", str(tmp_path / "copy.pt")]
    proc = subprocess.Popen(
        [sys.executable, "-c", f"import sys; {code}; sys.exit(main(sys.argv[1:]))", *argv],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.close()  # the reader is gone before the report is printed
    _, stderr = proc.communicate(timeout=120)
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr[-2000:]
    assert proc.returncode == 128 + 13, stderr[-2000:]


def test_cli_errors_name_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    truth = tmp_path / "truth.csv"
    truth.write_text("when,what\n1,2\n", encoding="utf-8")
    assert main(["evaluate", "--truth", str(truth), "--events", str(truth), "--no-oracle"]) == 2
    assert "neither MELD's" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nope.wav"), "--truth", str(truth)]) == 2
    assert "media file not found" in capsys.readouterr().err
    assert main(["evaluate", "--truth", str(truth)]) == 2
    assert "give the MEDIA" in capsys.readouterr().err
    good = tmp_path / "good.csv"
    good.write_text("start_s,end_s,text,emotion\n0,1,hi,joy\n", encoding="utf-8")
    bad_events = tmp_path / "bad.jsonl"
    bad_events.write_text("{not json\n", encoding="utf-8")
    assert main(["evaluate", "--truth", str(good), "--events", str(bad_events), "--no-oracle"]) == 1
    assert "line 1 is not JSON" in capsys.readouterr().err


# --------------------------------------------------------------------------- end to end (real models)

CHECKPOINT = Path(__file__).resolve().parents[2] / "models" / "emostream-default.pt"


@pytest.mark.slow
@pytest.mark.skipif(not CHECKPOINT.is_file(), reason=f"no trained checkpoint at {CHECKPOINT} yet")
def test_evaluate_replays_a_spoken_recording_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.helpers import make_dialogue, write_wav

    lines = [
        ("I am so happy to see you again.", "joy"),
        ("Get out of my house right now.", "anger"),
        ("The meeting is at three tomorrow.", "neutral"),
    ]
    talk = make_dialogue([text for text, _ in lines], gap_s=1.2)
    wav = write_wav(tmp_path / "talk.wav", talk.audio)
    truth = tmp_path / "truth.csv"
    rows = [f"{a:.4f},{b:.4f},{text},{emo}" for (a, b), (text, emo) in zip(talk.spans_s(), lines, strict=True)]
    truth.write_text("start_s,end_s,text,emotion\n" + "\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "report.json"
    argv = ["evaluate", str(wav), "--truth", str(truth), "--asr-model", "tiny.en", "--checkpoint", str(CHECKPOINT),
            "--json", str(out), "--keep-events", str(tmp_path / "events.jsonl")]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert report["counts"] == {"truth": 3, "predicted": 3, "matched": 3, "unclassified": 0}
    assert report["wer"]["matched"] < 0.3  # three sentences together; tiny.en's words vary between CPUs
    assert report["emotion"]["n"] == 3
    assert report["text_oracle"]["all_truth"]["n"] == 3
    assert 0 < report["replay"]["rtf"] < 5
    assert abs(report["timing"]["start_offset_s"]["median"]) < 0.5
    assert (tmp_path / "events.jsonl").stat().st_size > 0
    assert "| detection recall | 1.000 |" in capsys.readouterr().out
