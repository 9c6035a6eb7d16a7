"""The sans-I/O segmenter as pure logic: exact frame timing, padding, forced splits, edge inputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.stages.segmenter import Framer, Segmenter, SegmenterParams, SpeechStart, UtteranceEnd

F = 160  # 10 ms frames at 16 kHz, so every length below is a whole number of frames


def params(**kw: int) -> SegmenterParams:
    base = {"pre_roll_ms": 30, "post_roll_ms": 20, "min_speech_ms": 50, "max_utterance_ms": 1000, "end_silence_ms": 100}
    base.update(kw)
    return SegmenterParams(frame_samples=F, **base)


def run(pattern: str, p: SegmenterParams | None = None, *, flush: bool = True) -> list[SpeechStart | UtteranceEnd]:
    """Feed '1' (speech) / '0' frames; frame i holds the value i in every sample so pcm is checkable."""
    seg = Segmenter(p or params())
    out: list[SpeechStart | UtteranceEnd] = []
    for i, c in enumerate(pattern):
        out += seg.push(i * F, np.full(F, i, dtype=np.int16), c == "1")
    if flush:
        out += seg.flush()
    return out


def utterances(out: list[SpeechStart | UtteranceEnd]) -> list[UtteranceEnd]:
    return [o for o in out if isinstance(o, UtteranceEnd)]


def test_timing_is_exact_to_the_frame_with_pre_and_post_roll() -> None:
    # 10 silent frames, 8 speech frames (10..17), 20 silent frames.
    out = run("0" * 10 + "1" * 8 + "0" * 20)
    assert out[0] == SpeechStart(start_sample=7 * F)  # 3 frames of pre-roll
    (utt,) = utterances(out)
    assert (utt.start_sample, utt.end_sample, utt.speech_end_sample) == (7 * F, 20 * F, 18 * F)  # 2 post-roll frames
    assert not utt.forced
    assert utt.pcm.size == utt.end_sample - utt.start_sample
    assert np.array_equal(np.unique(utt.pcm), np.arange(7, 20))  # exactly frames 7..19, in order


def test_speech_start_is_emitted_when_min_speech_is_reached() -> None:
    seg = Segmenter(params())
    starts = [
        i for i in range(20) for o in seg.push(i * F, np.zeros(F, np.int16), i >= 2) if isinstance(o, SpeechStart)
    ]
    assert starts == [6]  # speech frames 2..6 = 50 ms


def test_utterance_ends_after_end_silence_not_before() -> None:
    seg = Segmenter(params())
    pattern = "1" * 10 + "0" * 10
    ends = [
        i
        for i, c in enumerate(pattern)
        for o in seg.push(i * F, np.zeros(F, np.int16), c == "1")
        if isinstance(o, UtteranceEnd)
    ]
    assert ends == [19]  # 10 silent frames (100 ms) after the last speech frame 9


def test_short_pause_does_not_split() -> None:
    out = run("0" * 5 + "1" * 10 + "0" * 9 + "1" * 10 + "0" * 15)
    (utt,) = utterances(out)
    assert (utt.start_sample, utt.end_sample) == (2 * F, 36 * F)


def test_burst_shorter_than_min_speech_is_dropped() -> None:
    assert run("0" * 10 + "1111" + "0" * 20) == []


def test_max_utterance_forces_a_split_without_overlap() -> None:
    out = run("0" * 5 + "1" * 250 + "0" * 20)  # 2.5 s of speech, max 1 s
    utts = utterances(out)
    assert [u.forced for u in utts] == [True, True, False]
    assert utts[0].start_sample == 2 * F
    assert utts[0].end_sample - utts[0].start_sample == 100 * F  # exactly max_utterance
    for a, b in zip(utts, utts[1:], strict=False):
        assert b.start_sample == a.end_sample  # contiguous, nothing shared, nothing lost
    assert utts[-1].end_sample == 257 * F
    assert sum(isinstance(o, SpeechStart) for o in out) == 3


def test_silence_only_input_yields_nothing() -> None:
    assert run("0" * 500) == []


def test_one_frame_input() -> None:
    assert run("1") == []  # shorter than min_speech
    out = run("1", params(min_speech_ms=0))
    assert out[0] == SpeechStart(0)
    (utt,) = utterances(out)
    assert (utt.start_sample, utt.end_sample) == (0, F)


def test_flush_ends_open_utterance_at_end_of_input() -> None:
    out = run("0" * 3 + "1" * 20 + "0" * 1)
    (utt,) = utterances(out)
    assert (utt.start_sample, utt.end_sample, utt.speech_end_sample) == (0, 24 * F, 23 * F)
    assert run("0" * 3 + "1" * 20, flush=False)[-1] == SpeechStart(0)


def test_pre_roll_never_reaches_into_the_previous_utterance() -> None:
    out = run("1" * 10 + "0" * 10 + "1" * 10 + "0" * 12, params(pre_roll_ms=200, post_roll_ms=20))
    a, b = utterances(out)
    assert a.end_sample == 12 * F
    assert b.start_sample >= a.end_sample


def test_params_round_up_to_frames_and_reject_nonsense() -> None:
    p = SegmenterParams(frame_samples=480, pre_roll_ms=31)
    assert p.frames(31) == 2
    with pytest.raises(ValueError, match="frame_samples"):
        SegmenterParams(frame_samples=0)
    with pytest.raises(ValueError, match="pre_roll_ms"):
        SegmenterParams(frame_samples=480, pre_roll_ms=-1)


def test_framer_cuts_any_chunking_into_exact_frames() -> None:
    fr = Framer(160)
    x = np.arange(1000, dtype=np.int16)
    got = []
    gap1, frames = fr.push(x[:100], 0)
    got += frames
    gap2, frames = fr.push(x[100:650], 100)
    got += frames
    assert not gap1 and not gap2
    assert [s for s, _ in got] == [0, 160, 320, 480]
    assert np.array_equal(np.concatenate([f for _, f in got]), x[:640])
    gap, frames = fr.push(x[:400], 5000)  # audio dropped in between
    assert gap
    assert [s for s, _ in frames] == [5000, 5160]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.booleans(), min_size=0, max_size=400))
def test_utterances_are_ordered_disjoint_and_within_input(decisions: list[bool]) -> None:
    out = run("".join("1" if d else "0" for d in decisions))
    utts = utterances(out)
    assert sum(isinstance(o, SpeechStart) for o in out) == len(utts)
    prev_end = 0
    for u in utts:
        assert prev_end <= u.start_sample < u.speech_end_sample <= u.end_sample <= len(decisions) * F
        assert u.end_sample - u.start_sample <= 100 * F
        assert u.pcm.size == u.end_sample - u.start_sample
        prev_end = u.end_sample


def test_lengths_that_barely_fit_the_maximum_give_up_pre_roll_then_split() -> None:
    # pre-roll 50 ms + min_speech 80 ms > max 100 ms: the pre-roll shrinks, no utterance is over 10 frames.
    p = params(pre_roll_ms=50, min_speech_ms=80, max_utterance_ms=100, end_silence_ms=30, post_roll_ms=0)
    out = run("0" * 10 + "1" * 25 + "0" * 10, p)
    utts = utterances(out)
    assert all(u.end_sample - u.start_sample <= 10 * F for u in utts)
    assert utts[0].start_sample == 9 * F  # 1 of the 5 pre-roll frames kept
    assert [u.forced for u in utts] == [True, True, False]
    assert utts[-1].end_sample == 35 * F
    assert all(b.start_sample == a.end_sample for a, b in zip(utts, utts[1:], strict=False))
    starts = [o for o in out if isinstance(o, SpeechStart)]
    assert len(starts) == len(utts)
