"""The held-out RAVDESS dev stream builder and the streamed-features matcher (generated audio only)."""

from __future__ import annotations

import numpy as np

from bench.make_ravdess_stream import LEAD_S, build_stream
from bench.stream_features import match_truth, segment
from stream.config import Config
from tests.helpers import synthesize, tone

SR = 16000


def _clip(voice: np.ndarray) -> np.ndarray:
    """A corpus-like clip: 1 s of silence, the voice, 0.2 s of silence."""
    return np.concatenate([np.zeros(SR, np.float32), voice, np.zeros(SR // 5, np.float32)])


def test_clips_are_cut_to_their_speech_and_spaced_by_the_gaps() -> None:
    clips = [(f"c{i}", _clip(tone(1.2, 200.0 + 20 * i))) for i in range(4)]
    audio, spans = build_stream(clips, seed=1)
    assert len(spans) == 4 and spans[0][0] == LEAD_S
    for (s, e), (s2, _) in zip(spans, spans[1:], strict=False):
        assert 1.2 <= e - s <= 1.3  # the voice with 20 ms either side, not the clip's silence
        assert 0.69 <= s2 - e <= 1.61  # the gap
    assert audio.size / SR >= spans[-1][1]


def test_the_services_segmenter_finds_each_clip_and_matches_it_to_its_truth_row() -> None:
    sentences = ("Kids are talking by the door.", "Dogs are sitting by the door.", "I never said that.")
    clips = [(f"c{i}", _clip(synthesize(text))) for i, text in enumerate(sentences)]
    audio, spans = build_stream(clips, seed=2)
    audio = audio + np.float32(1e-3) * np.random.default_rng(0).standard_normal(audio.size).astype(np.float32)
    utts = segment(audio, Config())
    found = [(s / SR, e / SR) for s, e, _ in utts]
    assert match_truth(found, spans) == [0, 1, 2]
    assert match_truth([(100.0, 101.0)], spans) == [-1]
