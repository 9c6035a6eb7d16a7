"""Speaker change points inside a segment: the pure rule, and the segment stage cutting at them."""

from __future__ import annotations

import numpy as np
import pytest

from stream.config import ConfigError, VADConfig, load_config
from stream.records import SpeechBegan, Utterance, UtterancePreview, same_audio
from stream.stages.change_points import ChangeParams, change_points, gap_scores, score_at, select
from stream.stages.segment import SegmentStage, change_params, segmenter_params
from stream.stages.vad import make_vad
from tests.helpers import audio_chunks, synthesize

A_TEXT = "I still don't get why they would give us a fake number."
B_TEXT = "Maybe they did not know what they were doing at all."


def _scene(second_voice: str, second_pitch: int, gap_s: float) -> tuple[np.ndarray, int]:
    """Two lines ``gap_s`` apart (the second in the given voice) at -6 dB over a faint noise floor;
    the audio and the sample where the gap's middle is."""
    a = synthesize(A_TEXT, voice="en-us+m3", pitch=30) * 0.5
    b = synthesize(B_TEXT, voice=second_voice, pitch=second_pitch) * 0.5
    lead, gap, tail = (np.zeros(round(s * 16000), np.float32) for s in (0.1, gap_s, 1.0))
    audio = np.concatenate([lead, a, gap, b, tail])
    audio = audio + np.random.default_rng(0).normal(0, 3e-4, audio.size).astype(np.float32)
    return audio, lead.size + a.size + gap.size // 2


def test_a_change_of_voice_at_a_60_ms_gap_is_one_cut_there() -> None:
    audio, join = _scene("en-us+f4", 70, gap_s=0.06)
    cuts = change_points(audio, ChangeParams(threshold=2.0))
    assert len(cuts) == 1 and abs(cuts[0] - join) < 0.05 * 16000


def test_the_same_voice_after_a_sentence_pause_is_not_cut() -> None:
    audio, _ = _scene("en-us+m3", 30, gap_s=0.35)
    assert change_points(audio, ChangeParams(threshold=2.0)) == []
    scores = [s for _, s in gap_scores(audio) if s is not None]
    other, _ = _scene("en-us+f4", 70, gap_s=0.35)
    assert max(scores) < max(s for _, s in gap_scores(other) if s is not None)


def test_the_score_at_a_pause_is_read_where_asked_and_only_there() -> None:
    audio, join = _scene("en-us+f4", 70, gap_s=0.2)
    same, same_join = _scene("en-us+m3", 30, gap_s=0.2)
    changed, kept = score_at(audio, join), score_at(same, same_join)
    assert changed is not None and kept is not None and changed > 2.0 > kept
    assert score_at(audio, 8000) is None  # no pause within reach of the first half-second


def test_only_the_best_pause_within_a_second_is_cut() -> None:
    scores: list[tuple[int, float | None]] = [(16000, 2.0), (24000, 3.0), (48000, 2.5), (50000, None)]
    assert select(scores, 1.5) == [24000, 48000]
    assert select(scores, 2.6) == [24000]
    assert select([], 1.0) == []


def test_silence_and_short_audio_have_no_change() -> None:
    assert change_points(np.zeros(16000, np.float32), ChangeParams(threshold=1.0)) == []
    assert change_points(np.zeros(100, np.float32), ChangeParams(threshold=1.0)) == []


def test_params_and_config_are_checked() -> None:
    with pytest.raises(ValueError, match="threshold"):
        ChangeParams(threshold=0.0)
    with pytest.raises(ValueError, match="min_gap_ms"):
        ChangeParams(threshold=1.0, min_gap_ms=5)
    assert change_params(VADConfig()) is None  # off by default
    assert change_params(VADConfig(speaker_change_score=2.0)) == ChangeParams(2.0, 50)
    with pytest.raises(ConfigError, match="vad.speaker_change_score"):
        load_config(None, **{"vad.speaker_change_score": -1.0})


async def test_the_segment_stage_cuts_a_two_voice_segment_into_two_utterances_and_previews_alike() -> None:
    audio, join = _scene("en-us+f4", 70, gap_s=0.06)
    cfg = VADConfig(speaker_change_score=2.0)
    vad = make_vad(cfg)
    stage = SegmentStage("s", vad, segmenter_params(cfg, vad.frame_samples), speed=None, change=change_params(cfg))
    items = [item async for item in stage.run(audio_chunks(audio))]
    utts = [i for i in items if isinstance(i, Utterance)]
    starts = [i for i in items if isinstance(i, SpeechBegan)]
    previews = [i.utterance for i in items if isinstance(i, UtterancePreview)]
    assert [u.utterance_id for u in utts] == ["s-1", "s-2"] == [b.utterance_id for b in starts]
    assert utts[0].end_s == utts[1].start_s == starts[1].start_s
    assert abs(utts[0].end_s - join / 16000) < 0.05
    assert utts[0].audio.size + utts[1].audio.size == round((utts[1].end_s - utts[0].start_s) * 16000)
    # The last preview was cut the same way, with the same ids: early work on it is used.
    assert [p.utterance_id for p in previews[-2:]] == ["s-1", "s-2"]
    assert all(same_audio(p, u) for p, u in zip(previews[-2:], utts, strict=True))
    assert stage.change_cuts == 1
