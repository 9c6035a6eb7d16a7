"""Work started on an utterance's preview, waiting for the utterance to end.

With an early start (``vad.early_start_ms``) the segmenter sends a preview of an open utterance once
its post-roll has passed (:class:`~stream.records.UtterancePreview`); the transcriber, the speaker
stage and the classifier's feature thread start on it. When the utterance ends, its work is used only
if the preview had exactly the same samples (:func:`~stream.records.same_audio`); otherwise (speech
resumed, the utterance grew) the early pass is cancelled or, once under way, finishes unread.

:class:`EarlyWork` is that bookkeeping, once: per utterance id, the latest preview and the future of
its work, with counts of what was started, used and wasted.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

from stream.records import Utterance, same_audio

__all__ = ["EarlyWork"]


class _Cancellable(Protocol):
    def cancel(self) -> bool: ...


F = TypeVar("F", bound=_Cancellable)


class EarlyWork(Generic[F]):
    """Per utterance id: the preview work was started on, and the future of that work.

    Works with ``asyncio`` and ``concurrent.futures`` futures alike (it only ever cancels them).
    """

    def __init__(self) -> None:
        self._work: dict[str, tuple[Utterance, F]] = {}
        self.started = 0
        self.used = 0
        self.wasted = 0

    def __len__(self) -> int:
        return len(self._work)

    def has(self, utt: Utterance) -> bool:
        """Whether work on exactly ``utt``'s audio is already started (no need to start it again)."""
        entry = self._work.get(utt.utterance_id)
        return entry is not None and same_audio(entry[0], utt)

    def put(self, utt: Utterance, future: F) -> None:
        """Keep ``future`` as the work on ``utt``; earlier work on the same utterance is dropped."""
        self.drop(utt.utterance_id)
        self._work[utt.utterance_id] = (utt, future)
        self.started += 1

    def claim(self, utt: Utterance) -> F | None:
        """The work started on ``utt``'s audio, taken out of the map (counted as used); ``None`` when there
        is none or it was started on other samples (that work is dropped)."""
        entry = self._work.get(utt.utterance_id)
        if entry is None or not same_audio(entry[0], utt):
            self.drop(utt.utterance_id)
            return None
        del self._work[utt.utterance_id]
        self.used += 1
        return entry[1]

    def failed(self) -> None:
        """A claimed future raised: count it as wasted rather than used."""
        self.used -= 1
        self.wasted += 1

    def drop(self, utterance_id: str) -> None:
        """Cancel the work on ``utterance_id`` if any (a pass not begun never runs; one under way
        finishes unread)."""
        entry = self._work.pop(utterance_id, None)
        if entry is not None:
            entry[1].cancel()
            self.wasted += 1

    def clear(self) -> None:
        """Drop everything (the run ends)."""
        for uid in list(self._work):
            self.drop(uid)

    def counts(self) -> dict[str, int]:
        return {"started": self.started, "used": self.used, "wasted": self.wasted}
