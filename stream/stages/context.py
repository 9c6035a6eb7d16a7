"""The classifier's past context: per-stream windows of already classified utterances (sans-I/O).

Each stream keeps its last ``max_utterances`` utterances that had text, with the text encoding the
classifier computed for them (so a past line is never encoded again) and their words (for a checkpoint
that reads its past lines inside the encoder's input), within ``window_s`` seconds
before the current line's start. Only lines that were classified before the current one, and that
started before it, can be in its window: never the future. Windows are per stream and are dropped
when the stream ends (:meth:`ContextWindows.reset`).

Speakers: when an utterance record carries a speaker label (a speaker stage), each stream numbers
its speakers ``S1``, ``S2`` ... in order of first appearance, as the text branch was trained on
MELD's dialogues; without labels every line is the unknown speaker (``S?``) and the speaker
relations are unknown.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from training.context import RELATION_UNKNOWN, relation

__all__ = ["ContextRow", "ContextWindows", "PastUtterance", "Plan", "StreamContext"]


@dataclass(frozen=True, slots=True)
class PastUtterance:
    utterance_id: str
    start_s: float
    end_s: float
    tag: str | None  # "S1"...; None = unknown speaker
    embedding: np.ndarray
    text: str = ""


@dataclass(frozen=True, slots=True)
class ContextRow:
    """What the planner needs of one row of a batch."""

    stream: str
    utterance_id: str
    start_s: float
    end_s: float
    speaker: str | None  # the speaker stage's label; None = unknown
    has_text: bool
    text: str = ""


@dataclass(frozen=True, slots=True)
class Plan:
    """The batch's context: per row its speaker tag, its past items for the predictor (a cached
    embedding, or the index of an earlier row of this batch; with the speaker relation), the
    ids of those past utterances (for the ``emotion`` event), and their (tag, words), item for item."""

    tags: list[str | None]
    past: list[list[tuple[np.ndarray | int, int]]]
    ids: list[tuple[str, ...]]
    lines: list[list[tuple[str | None, str]]]


class StreamContext:
    """One stream's bounded past and its speaker numbering."""

    def __init__(self, max_utterances: int, window_s: float) -> None:
        self.max_utterances = max_utterances
        self.window_s = window_s
        self._items: deque[PastUtterance] = deque(maxlen=max(1, max_utterances))
        self._tags: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._items)

    def tag(self, speaker: str | None) -> str | None:
        """``S1``, ``S2``... by order of first appearance in this stream; ``None`` for no label."""
        if not speaker:
            return None
        return self._tags.setdefault(speaker, f"S{len(self._tags) + 1}")

    def window(self, start_s: float) -> list[PastUtterance]:
        """The cached past of a line starting at ``start_s``, oldest first."""
        if self.max_utterances <= 0:
            return []
        out = [p for p in self._items if p.start_s < start_s and p.end_s >= start_s - self.window_s]
        return out[-self.max_utterances :]

    def add(self, item: PastUtterance) -> None:
        self._items.append(item)


class ContextWindows:
    """All streams' windows; :meth:`plan` a batch, classify it, then :meth:`record` its results."""

    def __init__(self, max_utterances: int, window_s: float) -> None:
        if max_utterances < 0 or window_s < 0:
            raise ValueError("max_utterances and window_s must be >= 0")
        self.max_utterances = max_utterances
        self.window_s = window_s
        self._streams: dict[str, StreamContext] = {}

    def stream(self, stream: str) -> StreamContext:
        ctx = self._streams.get(stream)
        if ctx is None:
            ctx = self._streams[stream] = StreamContext(self.max_utterances, self.window_s)
        return ctx

    @property
    def streams(self) -> int:
        return len(self._streams)

    def reset(self, stream: str) -> None:
        """Forget a stream's past (it ended; a later stream with the same id starts afresh)."""
        self._streams.pop(stream, None)

    def plan(self, rows: Sequence[ContextRow]) -> Plan:
        tags: list[str | None] = []
        past: list[list[tuple[np.ndarray | int, int]]] = []
        ids: list[tuple[str, ...]] = []
        lines: list[list[tuple[str | None, str]]] = []
        for i, row in enumerate(rows):
            ctx = self.stream(row.stream)
            tag = ctx.tag(row.speaker)
            tags.append(tag)
            cached: list[tuple[str, str, str | None, np.ndarray | int]] = [
                (p.utterance_id, p.text, p.tag, p.embedding) for p in ctx.window(row.start_s)
            ]
            # Lines of the same stream earlier in this batch are past too (not yet in the cache).
            for j in range(i):
                prev = rows[j]
                if (prev.stream == row.stream and prev.has_text and prev.start_s < row.start_s
                        and prev.end_s >= row.start_s - self.window_s):  # fmt: skip
                    cached.append((prev.utterance_id, prev.text, tags[j], j))
            chosen = cached[-self.max_utterances :] if self.max_utterances > 0 else []
            past.append([(item, _relation(tag, ptag)) for _, _, ptag, item in chosen])
            ids.append(tuple(uid for uid, _, _, _ in chosen))
            lines.append([(ptag, text) for _, text, ptag, _ in chosen])
        return Plan(tags, past, ids, lines)

    def record(self, row: ContextRow, tag: str | None, embedding: np.ndarray | None) -> None:
        """Cache a classified line's text encoding (and words) for the lines after it."""
        if embedding is None or not row.has_text or self.max_utterances <= 0:
            return
        self.stream(row.stream).add(PastUtterance(row.utterance_id, row.start_s, row.end_s, tag, embedding, row.text))


def _relation(tag: str | None, past_tag: str | None) -> int:
    if tag is None or past_tag is None:
        return RELATION_UNKNOWN
    return relation(tag, past_tag)
