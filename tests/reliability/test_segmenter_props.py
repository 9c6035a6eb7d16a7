"""Property tests for the sans-I/O segmenter: any frame sequence, any (valid) lengths.

Invariants checked on every generated run:

* outputs alternate ``SpeechStart`` -> ``UtteranceEnd`` with the same start, times strictly in order;
* utterances never overlap and never exceed ``max_utterance``;
* each utterance's ``pcm`` is exactly the input samples ``[start_sample, end_sample)``;
* ``speech_end_sample`` lies inside the utterance and ends a speech frame;
* every speech frame of a run of speech at least ``min_speech`` long is inside an utterance
  (shorter isolated bursts may be discarded, by design);
* the :class:`Framer` cuts any chunking of a signal into the same frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.stages.segmenter import Framer, Segmenter, SegmenterParams, SpeechStart, UtteranceEnd

RATE = 16000
PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True, slots=True)
class Run:
    params: SegmenterParams
    speech: list[bool]
    signal: np.ndarray  # sample i holds i (mod 2**15): pcm slices reveal their exact position


def runs_of(speech: list[bool]) -> list[tuple[int, int]]:
    """[first, last] frame indices of each run of consecutive speech frames."""
    out: list[tuple[int, int]] = []
    start = None
    for i, s in enumerate([*speech, False]):
        if s and start is None:
            start = i
        elif not s and start is not None:
            out.append((start, i - 1))
            start = None
    return out


@st.composite
def frame_runs(draw: st.DrawFn) -> Run:
    frame_ms = draw(st.sampled_from([10, 20, 30]))
    frame_samples = RATE * frame_ms // 1000
    max_utterance_ms = draw(st.integers(min_value=frame_ms, max_value=3000))
    params = SegmenterParams(
        frame_samples=frame_samples,
        sample_rate_hz=RATE,
        pre_roll_ms=draw(st.integers(0, 600)),
        post_roll_ms=draw(st.integers(0, 600)),
        min_speech_ms=draw(st.integers(0, 600)),
        max_utterance_ms=max_utterance_ms,
        end_silence_ms=draw(st.integers(0, 3000)),
    )
    # Speech arrives in runs: draw (is_speech, run length) pairs so long runs are common.
    pieces = draw(st.lists(st.tuples(st.booleans(), st.integers(1, 120)), min_size=0, max_size=12))
    speech = [s for s, n in pieces for _ in range(n)]
    signal = (np.arange(len(speech) * frame_samples) % 32768).astype(np.int16)
    return Run(params, speech, signal)


def segment(run: Run) -> list[SpeechStart | UtteranceEnd]:
    seg = Segmenter(run.params)
    n = run.params.frame_samples
    out: list[SpeechStart | UtteranceEnd] = []
    for i, is_speech in enumerate(run.speech):
        out.extend(seg.push(i * n, run.signal[i * n : (i + 1) * n], is_speech))
    out.extend(seg.flush())
    assert not seg.in_utterance
    return out


def utterances(run: Run, out: list[SpeechStart | UtteranceEnd]) -> list[UtteranceEnd]:
    """Check the output grammar and timing; return the utterances."""
    p = run.params
    max_samples = max(1, p.max_utterance_ms * p.sample_rate_hz // (1000 * p.frame_samples)) * p.frame_samples
    utts: list[UtteranceEnd] = []
    open_start: int | None = None
    last_end = 0
    for ev in out:
        if isinstance(ev, SpeechStart):
            assert open_start is None, "two SpeechStart without an UtteranceEnd between them"
            assert ev.start_sample >= last_end, "an utterance starts inside the previous one"
            open_start = ev.start_sample
        else:
            assert open_start is not None, "UtteranceEnd without SpeechStart"
            assert ev.start_sample == open_start
            assert last_end <= ev.start_sample < ev.end_sample <= run.signal.size
            assert ev.end_sample - ev.start_sample <= max_samples, (
                f"utterance of {ev.end_sample - ev.start_sample} samples exceeds the maximum of {max_samples}"
            )
            assert ev.start_sample % p.frame_samples == 0 and ev.end_sample % p.frame_samples == 0
            np.testing.assert_array_equal(ev.pcm, run.signal[ev.start_sample : ev.end_sample])
            assert ev.start_sample < ev.speech_end_sample <= ev.end_sample
            last_speech_frame = ev.speech_end_sample // p.frame_samples - 1
            assert run.speech[last_speech_frame], "speech_end_sample does not end a speech frame"
            utts.append(ev)
            last_end = ev.end_sample
            open_start = None
    assert open_start is None, "flush left an utterance open"
    return utts


def covered(utts: list[UtteranceEnd], frame: int, n: int) -> bool:
    return any(u.start_sample <= frame * n < u.end_sample for u in utts)


@PROPS
@given(frame_runs())
def test_utterances_ordered_bounded_exact(run: Run) -> None:
    utterances(run, segment(run))


@PROPS
@given(frame_runs())
def test_no_speech_in_utterances_without_speech(run: Run) -> None:
    utts = utterances(run, segment(run))
    n = run.params.frame_samples
    for u in utts:
        assert any(run.speech[u.start_sample // n : u.end_sample // n]), "an utterance holds no speech frame"


@PROPS
@given(frame_runs())
def test_every_long_enough_speech_run_is_covered(run: Run) -> None:
    utts = utterances(run, segment(run))
    p = run.params
    min_frames = max(1, p.frames(p.min_speech_ms))
    for first, last in runs_of(run.speech):
        if last - first + 1 < min_frames:
            continue
        lost = [f for f in range(first, last + 1) if not covered(utts, f, p.frame_samples)]
        assert not lost, f"speech frames {lost[:5]}... of run {first}-{last} are in no utterance"


@PROPS
@given(frame_runs())
def test_min_speech_zero_covers_every_speech_frame(run: Run) -> None:
    params = SegmenterParams(
        frame_samples=run.params.frame_samples,
        pre_roll_ms=run.params.pre_roll_ms,
        post_roll_ms=run.params.post_roll_ms,
        min_speech_ms=0,
        max_utterance_ms=run.params.max_utterance_ms,
        end_silence_ms=run.params.end_silence_ms,
    )
    run = Run(params, run.speech, run.signal)
    utts = utterances(run, segment(run))
    for i, s in enumerate(run.speech):
        if s:
            assert covered(utts, i, params.frame_samples), f"speech frame {i} is in no utterance"


def test_speech_after_a_forced_split_is_kept() -> None:
    """A talker who goes on a little past the maximum must not lose the end of the sentence."""
    params = SegmenterParams(
        frame_samples=480, pre_roll_ms=0, post_roll_ms=0, min_speech_ms=300, max_utterance_ms=1500, end_silence_ms=300
    )
    speech = [True] * 55 + [False] * 20  # 50 frames = the maximum, then 5 frames (150 ms < min_speech) more
    signal = (np.arange(len(speech) * 480) % 32768).astype(np.int16)
    run = Run(params, speech, signal)
    utts = utterances(run, segment(run))
    assert utts[0].forced and utts[0].end_sample == 50 * 480
    assert len(utts) == 2 and utts[1].start_sample == 50 * 480, "the 150 ms after the forced split were dropped"


@pytest.mark.parametrize(
    ("pre_roll_ms", "min_speech_ms", "end_silence_ms", "speech"),
    [
        (600, 0, 300, [False] * 30 + [True] * 60 + [False] * 30),
        (0, 900, 300, [False] * 30 + [True] * 60 + [False] * 30),
        (300, 300, 300, [False] * 30 + [True] * 60 + [False] * 30),
        (0, 90, 600, [False] * 5 + [True] + [False] * 15 + [True] * 3 + [False] * 30),
        (90, 60, 2000, [False] * 5 + [True] + [False] * 50 + [True] * 3 + [False] * 80),
    ],
    ids=["pre-roll-over-max", "min-speech-over-max", "both-together-over-max", "pause-inside-candidate", "long-pause"],
)
def test_inconsistent_lengths(pre_roll_ms: int, min_speech_ms: int, end_silence_ms: int, speech: list[bool]) -> None:
    """Lengths that cannot fit in max_utterance (500 ms): refuse the params, or still honour the maximum."""
    try:
        params = SegmenterParams(
            frame_samples=480,
            pre_roll_ms=pre_roll_ms,
            min_speech_ms=min_speech_ms,
            max_utterance_ms=500,
            end_silence_ms=end_silence_ms,
        )
    except ValueError:
        return
    signal = (np.arange(len(speech) * 480) % 32768).astype(np.int16)
    run = Run(params, speech, signal)
    for u in utterances(run, segment(run)):
        assert any(speech[u.start_sample // 480 : u.end_sample // 480]), "an utterance of pause only"


@PROPS
@given(
    st.sampled_from([160, 320, 480]),
    st.integers(0, 20_000),
    st.lists(st.integers(1, 5000), min_size=1, max_size=40),
)
def test_framer_any_chunking(frame_samples: int, total: int, cuts: list[int]) -> None:
    signal = (np.arange(total) % 32768).astype(np.int16)
    framer = Framer(frame_samples)
    frames: list[tuple[int, np.ndarray]] = []
    pos = 0
    i = 0
    while pos < total:
        size = cuts[i % len(cuts)]
        gap, got = framer.push(signal[pos : pos + size], pos)
        assert not gap
        frames.extend(got)
        pos += size
        i += 1
    assert [s for s, _ in frames] == [k * frame_samples for k in range(total // frame_samples)]
    if frames:
        np.testing.assert_array_equal(np.concatenate([f for _, f in frames]), signal[: len(frames) * frame_samples])
