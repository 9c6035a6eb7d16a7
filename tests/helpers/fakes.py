"""Stand-ins for the two model-backed parts (Whisper, the classifier), scripted or with injected faults.

* :class:`ScriptedTranscriber` / :class:`ScriptedPredictor`: texts in order, labels by keyword, calls recorded;
* :class:`FakeTranscriber` / :class:`FakePredictor`: ``"utterance N"`` and ``joy``, with faults and delays
  placed exactly (the Nth transcription raises, a batch holding a text fails, a call takes long).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence

import numpy as np

from stream.records import LABELS, Transcript
from training.inference import Prediction

__all__ = ["FakePredictor", "FakeTranscriber", "ScriptedPredictor", "ScriptedTranscriber"]


class ScriptedPredictor:
    """Stands in for ``training.inference.EmotionPredictor``: a fixed label per text keyword.

    Records every ``predict`` call (``calls``: list of (texts, audio)) so tests can check batching
    and which modalities were passed; ``fail_on`` makes a call whose texts contain it raise.
    """

    def __init__(
        self,
        *,
        uses_text: bool = True,
        uses_audio: bool = True,
        keywords: dict[str, str] | None = None,
        fail_on: str | None = None,
        delay_s: float = 0.0,
    ) -> None:
        self.labels = tuple(LABELS)
        self.uses_text = uses_text
        self.uses_audio = uses_audio
        self.model_ids = {"classifier": "scripted"}
        self.keywords = keywords or {}
        self.fail_on = fail_on
        self.delay_s = delay_s
        self.calls: list[tuple[list[str | None], list[np.ndarray | None]]] = []

    def predict(self, texts: Sequence[str | None], audio: Sequence[np.ndarray | None]) -> list[Prediction]:
        self.calls.append((list(texts), list(audio)))
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_on is not None and any(t and self.fail_on in t for t in texts):
            raise RuntimeError(f"scripted failure on {self.fail_on!r}")
        out = []
        for text, clip in zip(texts, audio, strict=True):
            if text is None and clip is None:
                raise ValueError("a row needs text or audio")
            label = next((lab for key, lab in self.keywords.items() if text and key in text.lower()), "neutral")
            scores = {lab: (0.7 if lab == label else 0.05) for lab in self.labels}
            mods = tuple(m for m, x in (("text", text), ("audio", clip)) if x is not None)
            out.append(Prediction(label, scores, mods))
        return out


class ScriptedTranscriber:
    """Stands in for ``WhisperTranscriber``: returns ``texts`` in order (``None`` = raise)."""

    model_id = "scripted-asr"
    paths: dict[str, int] = {}  # noqa: RUF012 - read-only: a fake decodes one way

    def __init__(self, texts: Sequence[str | None] = (), *, default: str = "hello") -> None:
        self.texts = list(texts)
        self.default = default
        self.calls = 0

    def transcribe(self, audio: np.ndarray, *, redo: bool = True) -> object:
        text = self.texts[self.calls] if self.calls < len(self.texts) else self.default
        self.calls += 1
        if text is None:
            raise RuntimeError("scripted transcription failure")
        return Transcript(text, "en", -0.2, 0.01, None if text else "empty", text)


class FakeTranscriber:
    """Says ``"utterance N"`` for the Nth call (1-based); raises on the calls in ``fail_calls``."""

    model_id = "fake-asr"
    paths: dict[str, int] = {}  # noqa: RUF012 - read-only: a fake decodes one way

    def __init__(self, *, fail_calls: Iterable[int] = (), delay_s: float = 0.0) -> None:
        self.fail_calls = frozenset(fail_calls)
        self.delay_s = delay_s
        self.calls = 0
        self._lock = threading.Lock()

    def transcribe(self, audio: np.ndarray, *, redo: bool = True) -> Transcript:
        with self._lock:
            self.calls += 1
            n = self.calls
        if self.delay_s:
            time.sleep(self.delay_s)
        if n in self.fail_calls:
            raise RuntimeError(f"injected transcription fault on call {n}")
        text = f"utterance {n}"
        return Transcript(text, "en", -0.2, 0.01, None, text)


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

    def predict(self, texts: Sequence[str | None], audio: Sequence[np.ndarray | None]) -> list[Prediction]:
        if self.delay_s:
            time.sleep(self.delay_s)
        if any(t in self.fail_texts for t in texts if t):
            raise RuntimeError("injected classifier fault")
        self.rows += len(texts)
        scores = {lab: (0.94 if lab == "joy" else 0.01) for lab in LABELS}
        return [
            Prediction("joy", scores, tuple(m for m, x in (("text", t), ("audio", a)) if x is not None))
            for t, a in zip(texts, audio, strict=True)
        ]
