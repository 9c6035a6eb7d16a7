"""Scoring predicted utterances against ground truth: alignment, word error rate, emotion metrics.

Pure functions, no I/O: :func:`align` matches predictions to truth by time overlap, keeping time order,
:func:`word_errors` counts word edits on normalised text (jiwer), :func:`emotion_scores` gives weighted/macro-F1,
accuracy and the confusion matrix (scikit-learn). :mod:`stream.evaluation.report` builds its report from them.
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from stream.records import LABELS

__all__ = [
    "EmotionScores",
    "Match",
    "Utterance",
    "WordErrors",
    "align",
    "boundaries_kept",
    "emotion_scores",
    "normalise_words",
    "word_errors",
]


@dataclass(frozen=True, slots=True)
class Utterance:
    """One utterance on the recording's timeline (truth or prediction)."""

    start_s: float
    end_s: float
    text: str
    emotion: str | None  # one of LABELS; None = not annotated / not classified
    uid: str = ""
    latency_ms: float | None = None  # predictions only: the pipeline's own figure
    speaker: str | None = None  # truth: the person; predictions: the label sent (S1, ...); None = unknown
    # predictions only: each branch's own label ("text", "audio") beside the fused one, when reported
    branches: tuple[tuple[str, str], ...] = ()


# --------------------------------------------------------------------------- alignment


@dataclass(frozen=True, slots=True)
class Match:
    pred: int  # index into the predictions
    truth: int  # index into the truth
    overlap_s: float


def _overlap(a: Utterance, b: Utterance) -> float:
    return max(0.0, min(a.end_s, b.end_s) - max(a.start_s, b.start_s))


def align(pred: Sequence[Utterance], truth: Sequence[Utterance], *, min_overlap: float = 0.5) -> list[Match]:
    """Match predictions to truth one-to-one by time overlap.

    A pair may match when their overlap covers at least ``min_overlap`` of the shorter of the two (so
    a padded prediction still matches a tight truth span, and a loose subtitle span matches the speech
    inside it). Among matchings that keep time order (no crossing pairs), the one with the most pairs
    and then the most total overlap is chosen, exactly: a prediction spanning two truth utterances
    matches one of them, the other counts as missed. Both inputs must be sorted by start time.
    """
    if not 0.0 < min_overlap <= 1.0:
        raise ValueError(f"min_overlap must be in (0, 1], got {min_overlap}")
    pairs = _eligible_pairs(pred, truth, min_overlap)
    return [Match(i, j, ov) for i, j, ov in _heaviest_chain(pairs, len(truth))]


def _eligible_pairs(
    pred: Sequence[Utterance], truth: Sequence[Utterance], min_overlap: float
) -> list[tuple[int, int, float]]:
    """``(pred index, truth index, overlap)`` of every pair that may match, by pred then truth index."""
    # Both lists are sorted by start, so a sweep finds them without an n*m scan.
    pairs: list[tuple[int, int, float]] = []
    j0 = 0
    for i, p in enumerate(pred):
        while j0 < len(truth) and truth[j0].end_s <= p.start_s:  # ends before p, so before every later one
            j0 += 1
        for j in range(j0, len(truth)):
            t = truth[j]
            if t.start_s >= p.end_s:
                break
            ov = _overlap(p, t)
            shorter = max(min(p.end_s - p.start_s, t.end_s - t.start_s), 1e-9)
            if ov > 0 and ov >= min_overlap * shorter - 1e-9:
                pairs.append((i, j, ov))
    return pairs


def boundaries_kept(
    pred: Sequence[Utterance], truth: Sequence[Utterance], *, min_overlap: float = 0.5
) -> dict[str, dict[str, float | int | None]]:
    """Whether each boundary between consecutive truth lines was kept: no prediction *holds* both lines
    (overlaps at least ``min_overlap`` of each line's own span), so no one emotion stands for both.

    Counted apart where the speaker changes (both lines name different speakers: one label for two
    people's words) and where one speaker goes on (a line split the annotators made, often with no
    pause or change of voice to hear). Boundaries of lines without a speaker count under ``all`` only.
    Both inputs sorted by start time."""
    starts = [p.start_s for p in pred]
    reach = list(itertools.accumulate((p.end_s for p in pred), max))  # latest end among pred[: i + 1]
    holds: list[set[int]] = []
    for t in truth:
        held, i = set(), bisect.bisect_left(starts, t.end_s) - 1  # pred[i] starts before t ends
        while i >= 0 and reach[i] > t.start_s:
            if _overlap(pred[i], t) >= min_overlap * max(t.end_s - t.start_s, 1e-9):
                held.add(i)
            i -= 1
        holds.append(held)
    counts = {"all": [0, 0], "speaker_changes": [0, 0], "same_speaker": [0, 0]}
    for k in range(len(truth) - 1):
        a, b = truth[k], truth[k + 1]
        merged = bool(holds[k] & holds[k + 1])
        kinds = ["all"]
        if a.speaker and b.speaker:
            kinds.append("speaker_changes" if a.speaker != b.speaker else "same_speaker")
        for kind in kinds:
            counts[kind][0] += 1
            counts[kind][1] += merged
    return {kind: {"n": n, "merged": m, "kept": (n - m) / n if n else None} for kind, (n, m) in counts.items()}


class _PrefixMax:
    """A Fenwick tree of prefix maxima of ``(count, overlap, pair)`` over truth indices."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.tree: list[tuple[int, float, int]] = [(0, 0.0, -1)] * (size + 1)

    def query(self, j: int) -> tuple[int, float, int]:
        """The best chain ending at a truth index < ``j``."""
        out = (0, 0.0, -1)
        while j > 0:
            if self.tree[j][:2] > out[:2]:
                out = self.tree[j]
            j -= j & -j
        return out

    def update(self, j: int, value: tuple[int, float, int]) -> None:
        j += 1
        while j <= self.size:
            if value[:2] > self.tree[j][:2]:
                self.tree[j] = value
            j += j & -j


def _heaviest_chain(pairs: list[tuple[int, int, float]], size: int) -> list[tuple[int, int, float]]:
    """The pairs of the chain with strictly increasing pred and truth indices, most pairs then most overlap."""
    # Fed one prediction at a time: query all of its pairs before inserting any.
    tree = _PrefixMax(size)
    best: list[tuple[int, float, int]] = []  # per pair: (count, overlap, previous pair or -1)
    k = 0
    while k < len(pairs):
        group_end = k
        while group_end < len(pairs) and pairs[group_end][0] == pairs[k][0]:
            group_end += 1
        for idx in range(k, group_end):
            prev = tree.query(pairs[idx][1])
            best.append((prev[0] + 1, prev[1] + pairs[idx][2], prev[2]))
        for idx in range(k, group_end):
            tree.update(pairs[idx][1], (best[idx][0], best[idx][1], idx))
        k = group_end
    if not best:
        return []
    cur = max(range(len(best)), key=lambda n: (best[n][0], best[n][1], -n))
    chain: list[tuple[int, int, float]] = []
    while cur != -1:
        chain.append(pairs[cur])
        cur = best[cur][2]
    return chain[::-1]


# --------------------------------------------------------------------------- word error rate

_PUNCT_RE = re.compile(r"[^\w\s']+")
_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "`": "'", "´": "'"})


def normalise_words(text: str) -> list[str]:
    """Lower-case words without punctuation: ``"He’s  lost-it!"`` -> ``["hes", "lost", "it"]``.

    Apostrophes are dropped rather than split on, so ``he's`` and ``hes`` compare equal; hyphens and
    other punctuation separate words.
    """
    text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).lower()
    text = _PUNCT_RE.sub(" ", text.replace("_", " ")).replace("'", "")
    return text.split()


@dataclass(frozen=True, slots=True)
class WordErrors:
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    ref_words: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        """Errors per reference word; with no reference words, 0 when nothing was inserted, else inf."""
        if self.ref_words == 0:
            return 0.0 if self.insertions == 0 else math.inf
        return self.errors / self.ref_words

    def __add__(self, other: WordErrors) -> WordErrors:
        return WordErrors(
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
            self.ref_words + other.ref_words,
        )


def word_errors(reference: str | Sequence[str], hypothesis: str | Sequence[str]) -> WordErrors:
    """Word edits (jiwer's minimal Levenshtein alignment) between ``reference`` and ``hypothesis``.

    Strings are normalised first by :func:`normalise_words` (NFKC, lower case, apostrophes dropped,
    other punctuation separating words); word lists are compared as given.
    """
    import jiwer

    ref = normalise_words(reference) if isinstance(reference, str) else list(reference)
    hyp = normalise_words(hypothesis) if isinstance(hypothesis, str) else list(hypothesis)
    if not ref or not hyp:  # jiwer needs words on both sides; the counts are plain then
        return WordErrors(0, len(ref), len(hyp), len(ref))
    out = jiwer.process_words(" ".join(ref), " ".join(hyp))
    return WordErrors(out.substitutions, out.deletions, out.insertions, len(ref))


# --------------------------------------------------------------------------- emotion metrics


@dataclass(frozen=True, slots=True)
class EmotionScores:
    n: int
    accuracy: float
    weighted_f1: float
    macro_f1: float  # over the labels present in truth or predictions (scikit-learn's default)
    per_class_f1: dict[str, float]
    confusion: tuple[tuple[int, ...], ...]  # rows = truth, columns = prediction, in LABELS order

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "accuracy": self.accuracy,
            "weighted_f1": self.weighted_f1,
            "macro_f1": self.macro_f1,
            "per_class_f1": dict(self.per_class_f1),
            "confusion": {"labels": list(LABELS), "rows": "truth", "matrix": [list(r) for r in self.confusion]},
        }


def emotion_scores(truth: Sequence[str], pred: Sequence[str]) -> EmotionScores:
    """Accuracy, weighted-F1 (by truth support), macro-F1 and the confusion matrix over :data:`LABELS`
    (scikit-learn's metrics)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    if len(truth) != len(pred):
        raise ValueError(f"{len(truth)} truth labels but {len(pred)} predictions")
    for label in (*truth, *pred):
        if label not in LABELS:
            raise ValueError(f"unknown label {label!r}; allowed: {', '.join(LABELS)}")
    if not truth:
        empty = tuple(tuple(0 for _ in LABELS) for _ in LABELS)
        return EmotionScores(n=0, accuracy=0.0, weighted_f1=0.0, macro_f1=0.0, per_class_f1={}, confusion=empty)
    present = [label for label in LABELS if label in set(truth) | set(pred)]
    f1 = f1_score(truth, pred, labels=present, average=None, zero_division=0.0)
    matrix = confusion_matrix(truth, pred, labels=list(LABELS))
    return EmotionScores(
        n=len(truth),
        accuracy=float(accuracy_score(truth, pred)),
        weighted_f1=float(f1_score(truth, pred, labels=list(LABELS), average="weighted", zero_division=0.0)),
        macro_f1=float(f1.mean()),
        per_class_f1={label: float(v) for label, v in zip(present, f1, strict=True)},
        confusion=tuple(tuple(int(x) for x in row) for row in matrix),
    )
