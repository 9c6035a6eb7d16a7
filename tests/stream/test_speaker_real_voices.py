"""The speaker stage's clustering on real voices: held-out RAVDESS/EmoDB speakers, the packaged GE2E encoder."""

from __future__ import annotations

import importlib.util
import random

import numpy as np
import pytest

from bench.make_dialogue import DATA, build_dialogue, clips_by_speaker
from stream.evaluation.speaker_scoring import speaker_scores
from stream.stages.speaker_clustering import ClusteringParams, OnlineClusterer
from stream.stages.speaker_encoder import SpeakerEncoder

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("resemblyzer") is None, reason="Resemblyzer==0.1.4 not installed"),
    pytest.mark.skipif(not (DATA / "ravdess").is_dir(), reason=f"no RAVDESS/EmoDB under {DATA} (shared data)"),
]
SR = 16000


def test_corrections_fix_most_early_mistakes_on_a_held_out_4_speaker_dialogue() -> None:
    """One 4-speaker dialogue of acted emotional turns from the voices the clustering was never tuned on."""
    audio, turns = build_dialogue(clips_by_speaker("test"), rng=random.Random(11), turns=32)
    encoder = SpeakerEncoder.load("ge2e")
    embs = [encoder.embed(audio[int(t.start_s * SR) : int(t.end_s * SR)]) for t in turns]
    clusterer = OnlineClusterer(ClusteringParams())
    sent, final = [], []
    for i, e in enumerate(embs):
        assignment, _ = clusterer.add(e, str(i))
        sent.append(assignment.speaker)
        final.append(assignment.speaker)
        for c in assignment.corrections:
            assert int(c.key) < i and clusterer.resolve(final[int(c.key)]) == c.was
            final[int(c.key)] = c.into
    truth = [t.speaker for t in turns]
    as_sent = speaker_scores(truth, sent).error
    corrected = speaker_scores(truth, [clusterer.resolve(s) for s in final]).error
    assert corrected <= as_sent
    assert corrected <= 0.25, (as_sent, corrected)
    assert np.isfinite(as_sent)
