"""Utterance-level speaker scores: error under the best one-to-one label mapping, purity and coverage.

Pure functions, no I/O. Predicted labels are arbitrary names (``S1``, ``S2``...): :func:`speaker_scores`
maps them one-to-one onto the true speakers so that the most utterances agree (scipy's
``linear_sum_assignment`` when scipy is installed -- it comes with scikit-learn -- else an exact search
for small label sets), and counts every other utterance as an error: a second predicted label for one
speaker, an utterance with no predicted speaker (``None``), or no prediction at all.

* **error** = 1 - mapped agreements / utterances (0 is perfect).
* **purity**: the share of utterances whose predicted label's dominant true speaker is theirs
  (low when one label covers several people).
* **coverage**: the share of utterances whose true speaker's dominant predicted label is theirs
  (low when one person is split over several labels).

This is an utterance-level figure, not a diarization error rate: no frame timing, overlap or missed
speech enters it (see README, "Who is speaking").
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["SpeakerScores", "best_mapping", "speaker_scores"]


@dataclass(frozen=True, slots=True)
class SpeakerScores:
    n: int
    error: float
    purity: float
    coverage: float
    true_speakers: int
    predicted_speakers: int
    mapping: dict[str, str] = field(default_factory=dict)  # predicted label -> true speaker

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "error": self.error,
            "purity": self.purity,
            "coverage": self.coverage,
            "true_speakers": self.true_speakers,
            "predicted_speakers": self.predicted_speakers,
            "mapping": dict(self.mapping),
        }


def best_mapping(counts: np.ndarray) -> list[tuple[int, int]]:
    """Row-column pairs (one-to-one) maximising the summed ``counts`` (rows: predicted, columns: true)."""
    if counts.size == 0:
        return []
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:  # pragma: no cover - scipy comes with scikit-learn
        return _exhaustive(counts)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True)]


def _exhaustive(counts: np.ndarray) -> list[tuple[int, int]]:
    n_rows, n_cols = counts.shape
    if min(n_rows, n_cols) > 8:
        raise ValueError("more than 8 speakers on both sides need scipy for the mapping")
    best: tuple[int, list[tuple[int, int]]] = (-1, [])
    if n_rows <= n_cols:
        for perm in itertools.permutations(range(n_cols), n_rows):
            pairs = list(enumerate(perm))
            total = sum(int(counts[r, c]) for r, c in pairs)
            if total > best[0]:
                best = (total, pairs)
    else:
        for perm in itertools.permutations(range(n_rows), n_cols):
            pairs = [(r, c) for c, r in enumerate(perm)]
            total = sum(int(counts[r, c]) for r, c in pairs)
            if total > best[0]:
                best = (total, pairs)
    return best[1]


def speaker_scores(truth: Sequence[str], pred: Sequence[str | None]) -> SpeakerScores:
    """Score predicted speaker labels against true ones, utterance by utterance (same order, same length)."""
    if len(truth) != len(pred):
        raise ValueError(f"{len(pred)} predicted labels for {len(truth)} true ones")
    n = len(truth)
    if n == 0:
        return SpeakerScores(0, 0.0, 1.0, 1.0, 0, 0)
    true_names = sorted(set(truth))
    pred_names = sorted({p for p in pred if p is not None})
    counts = np.zeros((len(pred_names), len(true_names)), dtype=np.int64)
    for t, p in zip(truth, pred, strict=True):
        if p is not None:
            counts[pred_names.index(p), true_names.index(t)] += 1
    pairs = best_mapping(counts)
    agreed = sum(int(counts[r, c]) for r, c in pairs)
    by_pred: dict[str, Counter[str]] = {}
    by_true: dict[str, Counter[str]] = {}
    for t, p in zip(truth, pred, strict=True):
        key = p if p is not None else "\0none"  # no label: its own bucket, never a speaker
        by_pred.setdefault(key, Counter())[t] += 1
        by_true.setdefault(t, Counter())[key] += 1
    purity = sum(c.most_common(1)[0][1] for k, c in by_pred.items() if k != "\0none") / n
    coverage = sum(max((v for k, v in c.items() if k != "\0none"), default=0) for c in by_true.values()) / n
    return SpeakerScores(
        n=n,
        error=1.0 - agreed / n,
        purity=purity,
        coverage=coverage,
        true_speakers=len(true_names),
        predicted_speakers=len(pred_names),
        mapping={pred_names[r]: true_names[c] for r, c in pairs if counts[r, c] > 0},
    )
