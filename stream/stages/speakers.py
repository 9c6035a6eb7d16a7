"""The speaker stage: who said each utterance, decided beside Whisper in its own thread.

As soon as an utterance's speech ends, :meth:`SpeakerStage.start` embeds it (GE2E, voiced frames only,
see :mod:`stream.stages.speaker_encoder`) and assigns it with the stream's
:class:`~stream.stages.speaker_clustering.OnlineClusterer`, both in one worker thread, so the work
overlaps Whisper's. One worker also keeps each stream's utterances in order. :meth:`SpeakerStage.result`
is awaited when the transcript is ready; the GE2E pass (tens of ms) is normally done long before.
With an early start (:meth:`SpeakerStage.preview`, on an utterance's preview) the embedding is made
while the segmenter still waits for the end of the silence, and only the clustering is left at the end.

A failure on one utterance (bad audio, an encoder error) gives it no speaker (``None``), is counted in
``failures`` and logged; the stream goes on. Names come from enrolment (``--speaker Ross=ross.wav``)
or from a client's ``name_speaker`` message; they are kept here so that ``hello`` can list them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from stream.protocol import valid_speaker_label
from stream.records import Utterance
from stream.stages.early import EarlyWork
from stream.stages.speaker_clustering import ClusteringParams, Correction, Merge, OnlineClusterer

__all__ = ["Embedder", "SpeakerResult", "SpeakerStage"]

logger = logging.getLogger(__name__)


class Embedder(Protocol):
    model_id: str

    def embed(self, wav: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class SpeakerResult:
    """The speaker of one utterance (``None`` when it could not be told) and what it revealed."""

    speaker: str | None
    similarity: float | None = None
    new: bool = False
    merges: tuple[Merge, ...] = ()
    embed_s: float = 0.0
    corrections: tuple[Correction, ...] = ()  # earlier utterances (keys: utterance ids) re-assigned


class SpeakerStage:
    """Embeds and clusters utterances per stream; see the module docstring."""

    def __init__(
        self,
        embedder: Embedder,
        params: ClusteringParams,
        *,
        min_audio_s: float = 0.3,
        executor: Executor | None = None,
    ) -> None:
        self._embedder = embedder
        self._params = params
        self._min_audio_s = min_audio_s
        self._executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="speakers")
        self._clusterers: dict[str, OnlineClusterer] = {}
        self._futures: dict[str, asyncio.Future[SpeakerResult]] = {}
        self._early: EarlyWork[Future[np.ndarray]] = EarlyWork()  # embeddings made on previews
        self._names: dict[str, dict[str, str]] = {}  # stream -> label -> name
        self._enrolled: list[tuple[str, np.ndarray]] = []  # (name, embedding) seeded into every stream
        self.busy_s = 0.0
        self.audio_s = 0.0
        self.failures = 0

    @property
    def model_id(self) -> str:
        return self._embedder.model_id

    def enrol(self, name: str, audio: np.ndarray) -> None:
        """Seed a named speaker from a clean clip, for every stream (call before the run)."""
        self._enrolled.append((name, self._embedder.embed(audio)))

    def _clusterer(self, stream: str) -> OnlineClusterer:
        clusterer = self._clusterers.get(stream)
        if clusterer is None:
            clusterer = self._clusterers[stream] = OnlineClusterer(self._params)
            names = self._names.setdefault(stream, {})
            for name, emb in self._enrolled:
                names[clusterer.enrol(emb)] = name
        return clusterer

    def enrolled(self, stream: str) -> dict[str, str]:
        """The enrolled speakers' labels and names for ``stream`` (creating its clusterer)."""
        clusterer = self._clusterer(stream)
        return {label: self._names[stream][label] for label in clusterer.speakers if label in self._names[stream]}

    def names(self) -> Mapping[str, Mapping[str, str]]:
        """Every stream's speaker names so far (label -> name)."""
        return self._names

    def known(self, stream: str, label: str) -> bool:
        """Whether ``label`` was handed out on ``stream`` (merged labels included)."""
        clusterer = self._clusterers.get(stream)
        return clusterer is not None and (label in clusterer.speakers or clusterer.resolve(label) != label)

    def rename(self, stream: str, label: str, name: str) -> None:
        """Call ``label`` of ``stream`` ``name``; a label not handed out on that stream is a ``ValueError``."""
        if not valid_speaker_label(label) or not self.known(stream, label):
            raise ValueError(f"stream {stream!r} has no speaker {label!r} (yet)")
        self._names.setdefault(stream, {})[label] = name

    def _embed(self, audio: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        try:
            return self._embedder.embed(audio)
        finally:
            self.busy_s += time.perf_counter() - t0

    def _early_embedding(self, utt: Utterance) -> np.ndarray | None:
        """The embedding made on ``utt``'s preview, when it had the same audio (in the worker: it is done)."""
        future = self._early.claim(utt)
        if future is None:
            return None
        try:
            return future.result()
        except Exception:
            logger.warning("the early speaker embedding of %s failed; embedding it again", utt.utterance_id)
            self._early.failed()
            return None

    def _assign(self, utt: Utterance) -> SpeakerResult:
        t0 = time.perf_counter()
        try:
            emb = self._early_embedding(utt)
            if utt.audio.size < self._min_audio_s * 16000:
                return SpeakerResult(None)
            if emb is None:
                emb = self._embedder.embed(utt.audio)
            assignment, merges = self._clusterer(utt.stream).add(emb, utt.utterance_id)
        except Exception:
            self.failures += 1
            logger.exception("speaker stage failed on %s; it gets no speaker", utt.utterance_id)
            return SpeakerResult(None)
        finally:
            self.busy_s += time.perf_counter() - t0
            self.audio_s += utt.audio.size / 16000
        return SpeakerResult(
            assignment.speaker,
            round(assignment.similarity, 4),
            assignment.new,
            tuple(merges),
            time.perf_counter() - t0,
            assignment.corrections,
        )

    def preview(self, utt: Utterance) -> None:
        """Embed ``utt``, an open utterance as it will end (:class:`~stream.records.UtterancePreview`), now;
        :meth:`start` on the ended utterance uses it when the audio is the same. A no-op for an embedder
        that is not ``stateless`` (its answer must depend on the audio alone)."""
        if not getattr(self._embedder, "stateless", False):
            return
        self._early.drop(utt.utterance_id)
        if utt.audio.size >= self._min_audio_s * 16000:
            self._early.put(utt, self._executor.submit(self._embed, utt.audio))

    def voice(self, audio: np.ndarray) -> np.ndarray | None:
        """The embedding of a stretch of a stream's audio, for the segment stage's voice check at a pause (in
        the caller's thread; the encoder serialises its passes). None when the embedder is not ``stateless``
        (its answer must depend on the audio alone) or fails."""
        if not getattr(self._embedder, "stateless", False):
            return None
        try:
            return self._embedder.embed(audio)
        except Exception:
            logger.warning("the speaker encoder failed on a voice check at a pause; the reading decides", exc_info=True)
            return None

    def start(self, utt: Utterance) -> None:
        """Start embedding and assigning ``utt`` (call in speech-end order per stream)."""
        loop = asyncio.get_running_loop()
        self._futures[utt.utterance_id] = asyncio.wrap_future(self._executor.submit(self._assign, utt), loop=loop)

    async def result(self, utt: Utterance) -> SpeakerResult:
        """``utt``'s speaker (starting the work now if :meth:`start` was not called)."""
        future = self._futures.pop(utt.utterance_id, None)
        if future is None:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self._assign, utt)
        return await future

    @property
    def rtf(self) -> float:
        return self.busy_s / self.audio_s if self.audio_s else 0.0

    def close(self) -> None:
        self._early.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)
