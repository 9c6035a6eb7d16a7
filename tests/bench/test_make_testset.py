"""The spoken test set: truth spans lie exactly on the speech, files are readable by the evaluator."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from bench.make_testset import DEFAULT_MELD_DIR, Line, meld_lines, write_testset
from stream.evaluation import load_truth
from training.audio import load_audio

requires_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


@requires_espeak
def test_truth_spans_cover_the_speech_and_gaps_are_silent(tmp_path: Path) -> None:
    lines = [Line("Hello there, how are you?", "joy"), Line("Leave me alone.", "anger", speaker="Ross"),
             Line("Fine.", None)]  # fmt: skip
    ts = write_testset(lines, tmp_path, seed=1, gap_s=(0.8, 0.8), lead_s=0.5, tail_s=0.7)
    audio = load_audio(ts.wav)
    truth = load_truth([ts.truth_csv])
    assert [t.text for t in truth] == [line.text for line in lines]
    assert [t.emotion for t in truth] == ["joy", "anger", None]
    assert truth[0].start_s == pytest.approx(0.5, abs=1e-3)
    assert ts.duration_s == pytest.approx(audio.size / 16000, abs=1e-3)
    loud = np.abs(audio) > 0.01
    for k, t in enumerate(truth):
        a, b = round(t.start_s * 16000), round(t.end_s * 16000)
        assert loud[a] and loud[b - 1], "speech starts and ends exactly at the truth span"
        if k + 1 < len(truth):
            gap = truth[k + 1].start_s - t.end_s
            assert gap == pytest.approx(0.8, abs=2e-3)
            assert not loud[b + 1 : round(truth[k + 1].start_s * 16000) - 1].any()
    assert "espeak-ng" in ts.manifest.read_text()


@requires_espeak
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_mp4_has_video_and_the_same_audio_length(tmp_path: Path) -> None:
    import av

    ts = write_testset([Line("One two three.", "neutral")], tmp_path, mp4=True)
    assert ts.mp4 is not None
    with av.open(str(ts.mp4)) as container:
        assert container.streams.video and container.streams.audio
    assert load_audio(ts.mp4).size / 16000 == pytest.approx(ts.duration_s, abs=0.1)


def test_write_testset_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no lines"):
        write_testset([], tmp_path)
    with pytest.raises(ValueError, match="gap_s"):
        write_testset([Line("hi")], tmp_path, gap_s=(2.0, 1.0))


@pytest.mark.skipif(not (DEFAULT_MELD_DIR / "dev_sent_emo.csv").is_file(), reason="MELD CSVs not found")
def test_meld_lines_are_deterministic_and_within_limits() -> None:
    a = meld_lines(DEFAULT_MELD_DIR, n=25, seed=3, min_words=4, max_words=12)
    assert a == meld_lines(DEFAULT_MELD_DIR, n=25, seed=3, min_words=4, max_words=12)
    assert a != meld_lines(DEFAULT_MELD_DIR, n=25, seed=4, min_words=4, max_words=12)
    assert all(4 <= len(line.text.split()) <= 12 for line in a)
    assert all(line.source.startswith("meld-dev/dia") for line in a)
    with pytest.raises(ValueError, match="asked for 100000"):
        meld_lines(DEFAULT_MELD_DIR, n=100000)
    with pytest.raises(FileNotFoundError, match="MELD annotations not found"):
        meld_lines(Path("/nonexistent"), n=1)
