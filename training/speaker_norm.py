"""Speaker-normalised audio features: each utterance minus its speaker's running mean, never the future.

The audio branch reads standardised feature vectors minus an **offset**: the mean of the vectors heard
so far from the same speaker, shrunk toward zero (the training-set mean) with ``prior`` pseudo-counts,
so a speaker heard once or twice is barely moved and one heard often is centred on themselves. What a
voice always carries (pitch range, timbre, microphone) cancels; what changes from one utterance to the
next (the emotion) is left.

* :class:`RunningOffset` is the causal estimate a live stream has: ``observe(key, z)`` gives the offset
  from the utterances of ``key`` before ``z`` (and ``z`` itself when ``include_current``), then records it;
* :class:`StreamSpeakerOffsets` keys it per stream and per speaker for the service: an utterance with a
  speaker label (the speaker stage, per stream) is normalised by that speaker's statistics, one without
  by the whole stream's; :meth:`StreamSpeakerOffsets.reset` forgets a finished stream;
* :func:`simulated_stream_offsets` draws the same estimate for training rows: for each speaker, one
  stream of their clips in a random order (one random copy of each clip), each row normalised by the
  clips before it in that stream, so the head sees offsets of every maturity, as a live stream has;
* :func:`speaker_offsets` is the oracle (the speaker's whole session) and :func:`running_offsets` the
  causal estimate over rows in a given order, for evaluation.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

__all__ = [
    "RunningOffset",
    "StreamSpeakerOffsets",
    "running_offsets",
    "simulated_stream_offsets",
    "speaker_offsets",
]


class RunningOffset:
    """Per-key (speaker or stream) running mean of standardised vectors, shrunk toward zero.

    ``offset(key)`` before ``update(key, x)``: the rows before this one. :meth:`observe` does both, and
    with ``include_current`` counts the row itself too (``sum / (n + prior)`` over the rows so far).
    """

    def __init__(self, dim: int, prior: float, *, include_current: bool = False) -> None:
        self._dim = dim
        self._prior = prior
        self.include_current = include_current
        self._sums: dict[Hashable, np.ndarray] = {}
        self._counts: dict[Hashable, int] = {}

    def offset(self, key: Hashable) -> np.ndarray:
        n = self._counts.get(key, 0)
        if n == 0:
            return np.zeros(self._dim, dtype=np.float32)
        return (self._sums[key] / (n + self._prior)).astype(np.float32)

    def update(self, key: Hashable, x: np.ndarray) -> None:
        self._sums[key] = self._sums.get(key, np.zeros(self._dim, dtype=np.float64)) + x
        self._counts[key] = self._counts.get(key, 0) + 1

    def observe(self, key: Hashable, x: np.ndarray) -> np.ndarray:
        """The offset of row ``x`` of ``key`` (causal), recording ``x`` for the rows after it."""
        if self.include_current:
            self.update(key, x)
            return self.offset(key)
        off = self.offset(key)
        self.update(key, x)
        return off

    def count(self, key: Hashable) -> int:
        return self._counts.get(key, 0)

    def known(self) -> list[Hashable]:
        """The keys with statistics."""
        return list(self._counts)

    def reset(self, key: Hashable | None = None) -> None:
        if key is None:
            self._sums.clear()
            self._counts.clear()
        else:
            self._sums.pop(key, None)
            self._counts.pop(key, None)


class StreamSpeakerOffsets:
    """Running offsets per stream and per speaker within it (the service's normalisation state).

    Every row of a stream updates the stream's statistics; a row with a speaker label also updates and
    is normalised by that speaker's, a row without one (or every row, when no speakers are given) by the
    stream's. A row with no stream gets no offset. Not thread-safe: the caller serialises (see
    ``AudioFusion``).
    """

    def __init__(self, dim: int, prior: float, *, include_current: bool) -> None:
        self._state = RunningOffset(dim, prior, include_current=include_current)
        self._dim = dim

    def observe(
        self, z: np.ndarray, streams: Sequence[str | None], speakers: Sequence[str | None] | None
    ) -> np.ndarray:
        """Offsets of standardised rows ``z`` (in arrival order), recording them."""
        if len(streams) != len(z) or (speakers is not None and len(speakers) != len(z)):
            raise ValueError(f"got {len(z)} rows, {len(streams)} streams and "
                             f"{len(speakers) if speakers is not None else 'no'} speakers")  # fmt: skip
        out = np.zeros((len(z), self._dim), dtype=np.float32)
        for i, stream in enumerate(streams):
            if stream is None:
                continue
            row = np.asarray(z[i], dtype=np.float64)
            speaker = speakers[i] if speakers is not None else None
            stream_off = self._state.observe((stream, None), row)
            out[i] = self._state.observe((stream, speaker), row) if speaker else stream_off
        return out

    def count(self, stream: str, speaker: str | None = None) -> int:
        return self._state.count((stream, speaker))

    def reset(self, stream: str | None = None) -> None:
        """Forget ``stream``'s statistics (its speakers' too); all streams when None."""
        if stream is None:
            self._state.reset()
            return
        for key in self._state.known():
            if isinstance(key, tuple) and key[0] == stream:
                self._state.reset(key)


def speaker_offsets(
    z: np.ndarray, speakers: np.ndarray, prior: float, rng: np.random.Generator | None = None, *,
    include_current: bool = False, max_seen: int = 40,
) -> np.ndarray:  # fmt: skip
    """Offsets for standardised rows ``z`` from the same speaker's other rows (the whole session).

    ``include_current``: the row itself counts too. With ``rng`` (the former training draw; kept for
    comparison): a random number (0..``max_seen``) of random other rows.
    """
    out = np.zeros_like(z)
    for spk in np.unique(speakers):
        idx = np.flatnonzero(speakers == spk)
        n = idx.size
        if rng is None:
            chosen = np.ones((n, n), dtype=bool) if include_current else ~np.eye(n, dtype=bool)
            k = chosen.sum(axis=1)
        else:
            if n < 2:
                continue
            k = rng.integers(0, min(max_seen, n - 1) + 1, size=n)
            noise = rng.random((n, n))
            np.fill_diagonal(noise, 2.0)  # never the row itself
            chosen = noise.argsort(axis=1).argsort(axis=1) < k[:, None]
        out[idx] = (chosen.astype(z.dtype) @ z[idx]) / np.maximum(k[:, None] + prior, 1e-9)  # k = 0: offset 0
    return out


def running_offsets(
    z: np.ndarray, keys: Sequence[Hashable] | np.ndarray, prior: float, *, include_current: bool
) -> np.ndarray:
    """Causal offsets of rows ``z`` taken in order, each from the earlier rows of its key."""
    state = RunningOffset(z.shape[1], prior, include_current=include_current)
    out = np.zeros_like(z)
    for i, (key, row) in enumerate(zip(keys, z, strict=True)):
        out[i] = state.observe(key, np.asarray(row, np.float64))
    return out


def simulated_stream_offsets(
    z: np.ndarray, speakers: np.ndarray, groups: np.ndarray, prior: float, rng: np.random.Generator, *,
    include_current: bool,
) -> np.ndarray:  # fmt: skip
    """Training offsets: per speaker, a stream of their clips in a random order, causal offsets.

    ``groups``: the clip of each row (copies of one clip -- the clip itself, stream-like versions --
    share it). Each speaker's stream holds every clip once, as one of its copies drawn at random; a row
    is normalised by the clips before its own clip in that stream (plus itself with ``include_current``),
    never by a copy of itself.
    """
    out = np.zeros_like(z)
    for spk in np.unique(speakers):
        idx = np.flatnonzero(speakers == spk)
        _, clip = np.unique(groups[idx], return_inverse=True)
        n_clips = int(clip.max()) + 1
        shuffled = rng.permutation(idx.size)
        _, first = np.unique(clip[shuffled], return_index=True)
        copy_of = shuffled[first]  # per clip: the copy that plays in this stream
        order = rng.permutation(n_clips)
        rank = np.empty(n_clips, dtype=np.int64)
        rank[order] = np.arange(n_clips)
        rows = z[idx].astype(np.float64)
        prefix = np.vstack([np.zeros((1, z.shape[1])), np.cumsum(rows[copy_of[order]], axis=0)])
        pos = rank[clip]  # clips heard before each row's clip
        sums, counts = prefix[pos], pos.astype(np.float64)
        if include_current:
            sums, counts = sums + rows, counts + 1.0
        out[idx] = (sums / np.maximum(counts[:, None] + prior, 1e-9)).astype(z.dtype)
    return out
