"""Online speaker clustering, sans I/O: one unit-length embedding per utterance in, a speaker label out.

A naive online rule (join the nearest centroid above a cosine threshold, else open a new speaker)
decides each utterance once, against centroids made of one or two noisy embeddings early on, and
never recovers: its first mistakes split one speaker in two or glue two together for good. On
4-speaker real-voice dialogues (``bench/speakers.py``) it errs on 27 % of utterances at its best
threshold. :class:`OnlineClusterer` instead re-clusters a sliding window of recent utterances every
time one arrives, so each new decision rests on every recent utterance, re-assigned as evidence grows:

1. **Per-stream centring.** GE2E embeddings are non-negative, so every pair is fairly similar
   (different speakers ~0.5, same ~0.67) and the room, microphone and noise push them all together.
   Once the window holds ``warmup`` utterances, the window's mean embedding is subtracted before
   comparing: what the speakers share cancels, what tells them apart remains. This is the stream's
   adaptive threshold: the same cut (``threshold``, near 0 in centred space) follows each recording's
   own spread of similarities. Before that, raw similarities with ``warmup_threshold`` are used.
2. **Average-linkage clustering of the window**, stopped at ``threshold``.
3. **Labels by overlap with what was sent**: the window's clusters are matched one-to-one to the labels
   already sent for their utterances (largest total overlap, Hungarian); the new utterance takes its
   cluster's label, or a new one (up to ``max_speakers``; past the cap, the nearest speaker).
4. **History is never rewritten**: a label whose utterances fall, in ``merge_after`` successive
   clusterings, into other labels' clusters is reported once as a :class:`Merge` (``S3`` was ``S1``),
   and its utterances count as that speaker's from then on; the label is never handed out again.
5. **Corrections** (``correct``): each re-clustering also re-assigns the window's earlier utterances.
   One whose cluster now carries another label than it last had is reported as a :class:`Correction`
   (utterance ``key`` was ``S2``, is ``S1``) in the new utterance's :class:`Assignment`. The label
   sent first is not rewritten: the matching of clusters to labels still counts it, so corrections
   cannot snowball. On the held-out real-voice dialogues the labels after corrections err on
   markedly fewer utterances than the labels as sent (figures in the README).

Enrolled speakers (:meth:`OnlineClusterer.enrol`) are anchors: their clip's embedding is part of every
window, already labelled.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "Assignment",
    "ClusteringParams",
    "Correction",
    "Merge",
    "NaiveClusterer",
    "OnlineClusterer",
    "average_linkage",
]


@dataclass(frozen=True, slots=True)
class ClusteringParams:
    """Online clustering settings (``[speakers]`` in config.toml)."""

    threshold: float = 0.1  # average-linkage similarity that joins clusters, in centred space
    warmup_threshold: float = 0.65  # the same on raw similarities, before ``warmup`` utterances
    warmup: int = 5  # utterances in the window before centring
    window: int = 40  # recent utterances re-clustered at each new one
    max_speakers: int = 8
    pca_dims: int = 8  # centred embeddings are projected on the window's top principal axes (0: not)
    merge_after: int = 6  # successive clusterings a label must lose before it is reported merged
    correct_after: int = 2  # successive agreeing clusterings before an earlier utterance is re-assigned (0: never)

    def __post_init__(self) -> None:
        if not -1.0 < self.threshold < 1.0 or not -1.0 < self.warmup_threshold < 1.0:
            raise ValueError("thresholds are cosine similarities in (-1, 1)")
        if self.window < 2 or self.max_speakers < 1 or self.warmup < 2 or self.merge_after < 1:
            raise ValueError("window >= 2, max_speakers >= 1, warmup >= 2 and merge_after >= 1 are required")
        if self.correct_after < 0:
            raise ValueError("correct_after must be >= 0 (0: no corrections)")


@dataclass(frozen=True, slots=True)
class Correction:
    """An earlier utterance (``key``, as given to :meth:`OnlineClusterer.add`) is now ``into``'s, not ``was``'s."""

    key: str
    was: str
    into: str


@dataclass(frozen=True, slots=True)
class Assignment:
    """The speaker of one utterance; ``similarity``: raw cosine to that speaker's recent mean (1 if new)."""

    speaker: str
    similarity: float
    new: bool  # the speaker was opened by this utterance
    corrections: tuple[Correction, ...] = ()  # earlier utterances this one's evidence re-assigned


@dataclass(slots=True)
class _Item:
    """One utterance in the window: its embedding, the label sent, the label it has now, its key."""

    emb: np.ndarray
    sent: str
    now: str
    key: str
    votes: tuple[str, int] = ("", 0)  # the other label its clusters agreed on, and how many times in a row


@dataclass(frozen=True, slots=True)
class Merge:
    """Utterances labelled ``source`` turned out to be ``into``'s: ``source`` is retired."""

    source: str
    into: str
    utterances: int  # how many of ``source``'s utterances were in the window


def average_linkage(sim: np.ndarray, threshold: float) -> np.ndarray:
    """Cluster ids (0..k-1, by first member) of average-linkage clustering stopped below ``threshold``.

    ``sim`` is a symmetric similarity matrix. Pure numpy, O(n^3) for n items (n <= a few dozen here).
    """
    n = sim.shape[0]
    members: list[list[int]] = [[i] for i in range(n)]
    s = sim.astype(np.float64).copy()
    np.fill_diagonal(s, -np.inf)
    while len([m for m in members if m]) > 1:
        a, b = divmod(int(np.argmax(s)), n)
        if s[a, b] < threshold:
            break
        na, nb = len(members[a]), len(members[b])
        merged = (na * s[a] + nb * s[b]) / (na + nb)  # Lance-Williams update for average linkage
        s[a, :] = merged
        s[:, a] = merged
        s[a, a] = -np.inf
        s[b, :] = -np.inf
        s[:, b] = -np.inf
        members[a] += members[b]
        members[b] = []
    ids = np.empty(n, dtype=np.int64)
    for k, group in enumerate(sorted((m for m in members if m), key=min)):
        ids[group] = k
    return ids


def _match(overlap: np.ndarray) -> list[tuple[int, int]]:
    """One-to-one (row, column) pairs maximising the summed overlap; pairs with no overlap are left out."""
    if overlap.size == 0:
        return []
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:  # pragma: no cover - scipy comes with scikit-learn
        pairs: list[tuple[int, int]] = []
        used: set[int] = set()
        for flat in np.argsort(-overlap, axis=None, kind="stable"):
            r, c = divmod(int(flat), overlap.shape[1])
            if overlap[r, c] > 0 and r not in {p for p, _ in pairs} and c not in used:
                pairs.append((r, c))
                used.add(c)
        return pairs
    rows, cols = linear_sum_assignment(overlap, maximize=True)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if overlap[r, c] > 0]


@dataclass(slots=True)
class OnlineClusterer:
    """Per-stream online clustering; see the module docstring. Not thread-safe (one stream, one owner)."""

    params: ClusteringParams = field(default_factory=ClusteringParams)
    _window: deque[_Item] = field(init=False)
    _anchors: list[tuple[np.ndarray, str]] = field(init=False, default_factory=list)
    _live: list[str] = field(init=False, default_factory=list)
    _retired: dict[str, str] = field(init=False, default_factory=dict)
    _lost: dict[str, int] = field(init=False, default_factory=dict)  # label -> successive clusterings lost
    _next: itertools.count[int] = field(init=False, default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        self._window = deque(maxlen=self.params.window)

    @property
    def speakers(self) -> list[str]:
        """Labels in use (retired ones excluded), in order of appearance."""
        return list(self._live)

    def resolve(self, label: str) -> str:
        """The live label a (possibly retired) label now stands for."""
        seen = set()
        while label in self._retired and label not in seen:
            seen.add(label)
            label = self._retired[label]
        return label

    def enrol(self, embedding: np.ndarray) -> str:
        """Seed a known speaker from a clean clip; returns its label."""
        label = f"S{next(self._next)}"
        self._anchors.append((_unit(embedding), label))
        self._live.append(label)
        return label

    def add(self, embedding: np.ndarray, key: str = "") -> tuple[Assignment, list[Merge]]:
        """Assign one utterance (``key`` names it in later corrections); returns its speaker and any merges."""
        emb = _unit(embedding)
        window = list(self._window)
        items = [*self._anchors, *((it.emb, it.sent) for it in window), (emb, "")]
        raw = np.stack([e for e, _ in items])
        p = self.params
        if len(self._window) + 1 >= p.warmup:
            x = _project(raw, p.pca_dims)
            ids = average_linkage(x @ x.T, p.threshold)
        else:
            ids = average_linkage(raw @ raw.T, p.warmup_threshold)
        sent = [self.resolve(lab) if lab else "" for _, lab in items]
        labels = self._label_clusters(ids, sent, raw)
        merges = self._merges(ids, sent, labels)
        own = labels[int(ids[-1])]
        new = own not in self._live
        if new:
            self._live.append(own)
        mates = [raw[i] for i, lab in enumerate(sent) if lab == own]
        similarity = float(_unit(np.mean(mates, axis=0)) @ emb) if mates else 1.0
        corrections = self._correct(window, ids[len(self._anchors) : -1], labels) if p.correct_after else ()
        self._window.append(_Item(emb, own, own, key))
        return Assignment(own, similarity, new, corrections), merges

    def _correct(self, window: list[_Item], ids: np.ndarray, labels: dict[int, str]) -> tuple[Correction, ...]:
        """Window utterances whose cluster's label is no longer the one they last had."""
        out = []
        for item, cid in zip(window, ids, strict=True):
            into = labels.get(int(cid))
            was = self.resolve(item.now)
            if into is None or into == was:
                item.votes = ("", 0)
                continue
            votes = item.votes[1] + 1 if item.votes[0] == into else 1
            item.votes = (into, votes)
            if votes < self.params.correct_after:
                continue
            item.now, item.votes = into, ("", 0)
            out.append(Correction(item.key, was, into))
        return tuple(out)

    def label_of(self, key: str) -> str | None:
        """The label an utterance in the window has now (corrections and merges applied), if it is there."""
        for item in self._window:
            if item.key == key:
                return self.resolve(item.now)
        return None

    def _label_clusters(self, ids: np.ndarray, sent: list[str], raw: np.ndarray) -> dict[int, str]:
        k = int(ids.max()) + 1
        live = self._live
        overlap = np.zeros((k, len(live)), dtype=np.int64)
        for cid, lab in zip(ids, sent, strict=True):
            if lab in live:
                overlap[int(cid), live.index(lab)] += 1
        labels = {c: live[j] for c, j in _match(overlap)}
        own = int(ids[-1])
        if own not in labels:
            if len(live) < self.params.max_speakers:
                labels[own] = f"S{next(self._next)}"
            else:  # at the cap: the speaker whose recent utterances are closest
                means = {
                    lab: _unit(np.mean([raw[i] for i, s in enumerate(sent) if s == lab] or [raw[-1]], axis=0))
                    for lab in live
                }
                labels[own] = max(live, key=lambda lab: float(means[lab] @ raw[-1]))
        return labels

    def _merges(self, ids: np.ndarray, sent: list[str], labels: dict[int, str]) -> list[Merge]:
        """Labels in the window that got no cluster: all their utterances went to other speakers."""
        anchors = {lab for _, lab in self._anchors}
        assigned = set(labels.values())
        where: dict[str, dict[str, int]] = {}
        for cid, lab in zip(ids, sent, strict=True):
            target = labels.get(int(cid))
            if lab and target is not None:
                where.setdefault(lab, {}).setdefault(target, 0)
                where[lab][target] += 1
        merges = []
        for lab, into in where.items():
            if lab in assigned or lab in anchors or lab not in self._live:
                self._lost.pop(lab, None)
                continue
            self._lost[lab] = self._lost.get(lab, 0) + 1
            if self._lost[lab] < self.params.merge_after:
                continue
            del self._lost[lab]
            target = max(into, key=lambda t: into[t])
            self._retired[lab] = target
            self._live.remove(lab)
            merges.append(Merge(lab, target, sum(into.values())))
        return merges


@dataclass(slots=True)
class NaiveClusterer:
    """The baseline: nearest centroid at or above ``threshold``, else a new speaker (up to the cap)."""

    threshold: float = 0.6
    max_speakers: int = 8
    _speakers: dict[str, np.ndarray] = field(init=False, default_factory=dict)

    def add(self, embedding: np.ndarray) -> tuple[Assignment, list[Merge]]:
        emb = _unit(embedding)
        if self._speakers:
            label, total = max(self._speakers.items(), key=lambda kv: float(_unit(kv[1]) @ emb))
            sim = float(_unit(total) @ emb)
            if sim >= self.threshold or len(self._speakers) >= self.max_speakers:
                self._speakers[label] = total + emb
                return Assignment(label, sim, False), []
        label = f"S{len(self._speakers) + 1}"
        self._speakers[label] = emb.copy()
        return Assignment(label, 1.0, True), []


def _project(raw: np.ndarray, dims: int) -> np.ndarray:
    """Rows centred on their mean, projected on their top ``dims`` principal axes, unit length.

    Centring cancels what every voice in the stream shares (room, microphone, the encoder's bias); the
    top axes of the rest are where the stream's speakers differ most, so the noise in the other
    dimensions no longer dilutes the cosine similarity.
    """
    centred = raw - raw.mean(axis=0)
    if dims > 0:
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        centred = centred @ vt[: min(dims, vt.shape[0])].T
    unit: np.ndarray = centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-8)
    return unit


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64).reshape(-1)
    norm = float(np.linalg.norm(v))
    if not np.isfinite(norm) or norm == 0:
        raise ValueError("an embedding must be a finite non-zero vector")
    return v / norm
