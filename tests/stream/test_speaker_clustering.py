"""Online speaker clustering on synthetic embeddings (pure, no model)."""

from __future__ import annotations

import numpy as np
import pytest

from stream.evaluation.speaker_scoring import speaker_scores
from stream.stages.speaker_clustering import (
    ClusteringParams,
    NaiveClusterer,
    OnlineClusterer,
    average_linkage,
)


def _voices(rng: np.random.Generator, n: int, *, spread: float, shared: float = 1.0, dim: int = 64) -> np.ndarray:
    """``n`` speaker means sharing a common non-negative component, as GE2E embeddings do."""
    common = np.abs(rng.normal(size=dim)) * shared
    return common + rng.normal(size=(n, dim)) * spread


def _dialogue(rng: np.random.Generator, means: np.ndarray, turns: int, noise: float) -> tuple[list[str], np.ndarray]:
    truth, embs, previous = [], [], -1
    for _ in range(turns):
        who = int(rng.choice([k for k in range(len(means)) if k != previous]))
        truth.append(f"spk{who}")
        embs.append(means[who] + rng.normal(size=means.shape[1]) * noise)
        previous = who
    return truth, np.stack(embs)


def _run(clusterer: OnlineClusterer | NaiveClusterer, embs: np.ndarray) -> list[str]:
    return [clusterer.add(e)[0].speaker for e in embs]


def test_average_linkage_stops_at_the_threshold() -> None:
    sim = np.array([[1, 0.9, 0.1], [0.9, 1, 0.2], [0.1, 0.2, 1.0]])
    assert average_linkage(sim, 0.5).tolist() == [0, 0, 1]
    assert average_linkage(sim, 0.95).tolist() == [0, 1, 2]
    assert average_linkage(sim, 0.0).tolist() == [0, 0, 0]


def test_well_separated_speakers_are_found_exactly() -> None:
    rng = np.random.default_rng(0)
    truth, embs = _dialogue(rng, _voices(rng, 3, spread=1.0), 30, noise=0.15)
    labels = _run(OnlineClusterer(), embs)
    scores = speaker_scores(truth, labels)
    assert scores.error == 0.0 and scores.predicted_speakers == 3
    assert labels[0] == "S1"


def test_the_speaker_cap_holds() -> None:
    rng = np.random.default_rng(3)
    truth, embs = _dialogue(rng, _voices(rng, 6, spread=2.0), 36, noise=0.1)
    labels = _run(OnlineClusterer(ClusteringParams(max_speakers=3)), embs)
    assert len(set(labels)) == 3


def test_enrolled_speakers_keep_their_label() -> None:
    rng = np.random.default_rng(4)
    means = _voices(rng, 2, spread=1.0)
    clusterer = OnlineClusterer()
    assert clusterer.enrol(means[1]) == "S1"
    truth, embs = _dialogue(rng, means, 12, noise=0.1)
    labels = _run(clusterer, embs)
    assert dict(zip(truth, labels, strict=True))["spk1"] == "S1"
    assert speaker_scores(truth, labels).error == 0.0


def test_a_split_speaker_is_reported_merged_not_rewritten() -> None:
    """Early on, two takes of one voice look like two people; later evidence reports one merge."""
    rng = np.random.default_rng(5)
    dim = 32
    voice, other = _voices(rng, 2, spread=1.0, dim=dim)
    take_a, take_b = voice + rng.normal(size=dim) * 0.3, voice + rng.normal(size=dim) * 0.3
    params = ClusteringParams(warmup=6, warmup_threshold=0.99, merge_after=1, pca_dims=0)
    clusterer = OnlineClusterer(params)
    first = [clusterer.add(e)[0].speaker for e in (take_a, take_b)]
    assert first == ["S1", "S2"]  # the warm-up threshold is strict: a second speaker opens
    merges = []
    for k in range(30):
        e = (take_a, other, take_b)[k % 3] + rng.normal(size=dim) * 0.05
        merges += clusterer.add(e)[1]
    assert [(m.source, m.into) for m in merges] == [("S2", "S1")]
    assert clusterer.resolve("S2") == "S1" and "S2" not in clusterer.speakers


def test_bad_embeddings_and_params_are_refused() -> None:
    with pytest.raises(ValueError, match="finite non-zero"):
        OnlineClusterer().add(np.zeros(8))
    with pytest.raises(ValueError, match="window"):
        ClusteringParams(window=1)
