"""Utterance-level speaker error, purity and coverage."""

from __future__ import annotations

import pytest

from stream.evaluation.speaker_scoring import _exhaustive, best_mapping, speaker_scores


def test_perfect_labels_under_any_names() -> None:
    s = speaker_scores(["ross", "rachel", "ross"], ["S2", "S1", "S2"])
    assert (s.error, s.purity, s.coverage) == (0.0, 1.0, 1.0)
    assert s.mapping == {"S1": "rachel", "S2": "ross"}


def test_a_split_speaker_counts_its_smaller_part_as_errors() -> None:
    s = speaker_scores(["a", "a", "a", "a", "b"], ["S1", "S1", "S3", "S1", "S2"])
    assert s.error == pytest.approx(0.2)
    assert s.purity == 1.0 and s.coverage == pytest.approx(0.8)


def test_merged_speakers_lower_purity() -> None:
    s = speaker_scores(["a", "b", "a", "b"], ["S1", "S1", "S1", "S1"])
    assert s.error == 0.5 and s.purity == 0.5 and s.coverage == 1.0


def test_missing_labels_are_errors() -> None:
    s = speaker_scores(["a", "a", "b"], ["S1", None, "S2"])
    assert s.error == pytest.approx(1 / 3)
    assert s.coverage == pytest.approx(2 / 3)


def test_the_exhaustive_fallback_agrees_with_scipy() -> None:
    import numpy as np

    counts = np.array([[3, 1, 0], [2, 2, 0], [0, 5, 1], [1, 0, 4]])
    total = lambda pairs: sum(int(counts[r, c]) for r, c in pairs)  # noqa: E731
    assert total(_exhaustive(counts)) == total(best_mapping(counts)) == 3 + 5 + 4


def test_lengths_must_agree() -> None:
    with pytest.raises(ValueError, match="2 predicted labels for 1"):
        speaker_scores(["a"], ["S1", "S2"])
