"""Scripted stand-ins for Whisper and the classifier, with injectable faults and delays.

The reliability tests drive the real service (sources, VAD, segmenter, pipeline, event bus, event
log, server) and replace only the two model-backed stages, so faults can be placed exactly: the Nth
utterance's transcription raises, a classification takes long enough to be in flight when a signal
arrives, and so on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from stream.protocol import LABELS
from stream.records import Transcript

__all__ = ["FakePrediction", "FakePredictor", "FakeTranscriber"]


class FakeTranscriber:
    """Says ``"utterance N"`` for the Nth call (1-based); raises on the calls in ``fail_calls``."""

    model_id = "fake-asr"
    paths: dict[str, int] = {}  # noqa: RUF012 - read-only: a fake decodes one way

    def __init__(self, *, fail_calls: Iterable[int] = (), delay_s: float = 0.0) -> None:
        self.fail_calls = frozenset(fail_calls)
        self.delay_s = delay_s
        self.calls = 0
        self._lock = threading.Lock()

    def transcribe(self, audio: np.ndarray) -> Transcript:
        with self._lock:
            self.calls += 1
            n = self.calls
        if self.delay_s:
            time.sleep(self.delay_s)
        if n in self.fail_calls:
            raise RuntimeError(f"injected transcription fault on call {n}")
        text = f"utterance {n}"
        return Transcript(text, "en", -0.2, 0.01, None, text)


@dataclass(frozen=True, slots=True)
class FakePrediction:
    label: str
    scores: dict[str, float]
    modalities: tuple[str, ...]


class FakePredictor:
    """``joy`` for every row; raises for a batch holding a text in ``fail_texts``."""

    labels = tuple(LABELS)
    uses_text = True
    uses_audio = True
    model_ids = {"classifier": "fake"}  # noqa: RUF012 - read-only, mirrors EmotionPredictor

    def __init__(self, *, fail_texts: Iterable[str] = (), delay_s: float = 0.0) -> None:
        self.fail_texts = frozenset(fail_texts)
        self.delay_s = delay_s
        self.rows = 0

    def predict(self, texts: Sequence[str | None], audio: Sequence[np.ndarray | None]) -> list[FakePrediction]:
        if self.delay_s:
            time.sleep(self.delay_s)
        if any(t in self.fail_texts for t in texts if t):
            raise RuntimeError("injected classifier fault")
        self.rows += len(texts)
        scores = {lab: (0.94 if lab == "joy" else 0.01) for lab in LABELS}
        return [
            FakePrediction("joy", scores, tuple(m for m, x in (("text", t), ("audio", a)) if x is not None))
            for t, a in zip(texts, audio, strict=True)
        ]
