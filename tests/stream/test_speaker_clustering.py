"""Online speaker clustering on synthetic embeddings (pure, no model)."""

from __future__ import annotations

import numpy as np
import pytest

from stream.evaluation.speaker_scoring import speaker_scores
from stream.stages.speaker_clustering import (
    ClusteringParams,
    Correction,
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


def _apply(sent: list[str], corrections: list[Correction]) -> list[str]:
    final = list(sent)
    for c in corrections:
        final[int(c.key)] = c.into
    return final


def test_early_mistakes_are_corrected_by_events_not_rewritten() -> None:
    """A loose warm-up puts two voices under S1; once the window separates them, the early utterances of
    the second voice are reported re-assigned (after two agreeing clusterings), and what was sent stays."""
    rng = np.random.default_rng(7)
    truth, embs = _dialogue(rng, _voices(rng, 2, spread=1.0), 24, noise=0.15)
    params = ClusteringParams(warmup=4, warmup_threshold=-0.9, correct_after=2)
    clusterer = OnlineClusterer(params)
    sent, corrections = [], []
    for i, e in enumerate(embs):
        assignment, _ = clusterer.add(e, str(i))
        sent.append(assignment.speaker)
        corrections += assignment.corrections
    assert len(set(sent[:3])) == 1  # the warm-up joined everything at first
    assert speaker_scores(truth, sent).error > 0.0
    assert corrections and all(int(c.key) < 3 for c in corrections)  # only the early mistakes move
    assert all(c.was == "S1" and c.into != "S1" for c in corrections)
    final = _apply(sent, corrections)
    assert speaker_scores(truth, final).error == 0.0
    assert clusterer.label_of("0") == final[0] and clusterer.label_of("nope") is None


def test_corrections_wait_for_agreeing_clusterings_and_can_be_off() -> None:
    rng = np.random.default_rng(7)
    _, embs = _dialogue(rng, _voices(rng, 2, spread=1.0), 24, noise=0.15)

    def count(correct_after: int) -> int:
        clusterer = OnlineClusterer(ClusteringParams(warmup=4, warmup_threshold=-0.9, correct_after=correct_after))
        return sum(len(clusterer.add(e, str(i))[0].corrections) for i, e in enumerate(embs))

    assert count(0) == 0
    assert count(1) >= count(2) > 0
    with pytest.raises(ValueError, match="correct_after"):
        ClusteringParams(correct_after=-1)
