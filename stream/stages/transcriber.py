"""The transcription stage: :class:`TranscribeStage` runs a blocking :class:`Transcriber` in its own thread.

The transcriber (:class:`stream.stages.whisper.WhisperTranscriber` in the service) decodes a whole
utterance per call, so the stage runs each call in a one-worker executor -- the event loop never decodes.

Early start: :meth:`TranscribeStage.start_early` transcribes an utterance's preview (see
:class:`stream.records.UtterancePreview`) while the segmenter still waits for the end of its silence;
when the utterance then ends with the same audio, :meth:`TranscribeStage.run` takes that transcript
instead of a second pass, so Whisper's time leaves the path from end of speech to the events.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Protocol

import numpy as np

from stream.records import SAMPLE_RATE_HZ, Transcribed, Transcript, Utterance
from stream.stages.early import EarlyWork

__all__ = ["TranscribeStage", "Transcriber"]

logger = logging.getLogger(__name__)


class Transcriber(Protocol):
    model_id: str

    @property
    def paths(self) -> Mapping[str, int]:
        """How utterances were decoded so far, for ``stats`` (see :class:`stream.stages.whisper.WhisperTranscriber`)."""
        ...

    def transcribe(self, audio: np.ndarray, *, redo: bool = True) -> Transcript: ...


class TranscribeStage:
    """``Utterance`` in, ``Transcribed`` out, one at a time in a dedicated Whisper thread.

    A failure on one utterance becomes ``Transcribed(error=...)`` and the stream goes on.
    """

    def __init__(
        self,
        transcriber: Transcriber,
        *,
        executor: Executor | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._transcriber = transcriber
        self._executor = executor  # the caller's to shut down; None: each run() makes and ends its own
        self._clock = clock
        self.audio_s = 0.0  # audio transcribed so far
        self.busy_s = 0.0  # time spent transcribing it (end-of-turn checks included)
        self.check_audio_s = 0.0  # audio the end-of-turn checks transcribed
        self.reused = 0  # utterances whose transcript came from their end-of-turn check
        self._running: Executor | None = executor  # the Whisper thread of the run in progress
        # Early start: each utterance's latest preview and the transcription of it under way.
        self._early: EarlyWork[asyncio.Future[tuple[Transcript, float]]] = EarlyWork()

    @property
    def rtf(self) -> float:
        """Real-time factor: seconds of Whisper per second of audio (< 1 keeps up with live audio)."""
        return self.busy_s / self.audio_s if self.audio_s else 0.0

    @property
    def early(self) -> dict[str, int]:
        """Early-start passes started, used for their utterance, and wasted (speech resumed, or failed)."""
        return self._early.counts()

    @property
    def paths(self) -> dict[str, int]:
        """How the transcriber decoded so far (e.g. ``trimmed``, ``padded``)."""
        return dict(self._transcriber.paths)

    async def end_of_turn(self, audio: np.ndarray) -> Transcript | None:
        """The transcript of ``audio`` (an open utterance up to a short pause); None when Whisper failed.

        Runs in the Whisper thread (after what is already queued there) while :meth:`run` is running. The
        segment stage decides from it (:mod:`stream.stages.end_of_turn`) whether the utterance ends at the pause; when
        it does, the transcript is reused for it (``Utterance.transcript``): no second pass.
        """
        loop = asyncio.get_running_loop()
        t0 = self._clock()
        try:
            # A quick reading: no second, padded pass when Whisper doubts the first (see WhisperTranscriber).
            read = functools.partial(self._transcriber.transcribe, audio, redo=False)
            transcript = await loop.run_in_executor(self._running, read)
        except Exception:
            logger.exception("the end-of-turn check failed; the utterance goes on")
            return None
        finally:
            self.busy_s += self._clock() - t0
            self.check_audio_s += audio.size / SAMPLE_RATE_HZ
        return transcript

    def start_early(self, preview: Utterance) -> None:
        """Start transcribing ``preview`` (an open utterance as it will end) in the Whisper thread; a newer
        preview of the same utterance replaces it. A no-op unless :meth:`run` is running or an executor was given,
        and for a preview whose transcript is known already (the end-of-turn check read that audio)."""
        if self._running is None or preview.transcript is not None:
            return
        loop = asyncio.get_running_loop()
        self._early.put(preview, loop.run_in_executor(self._running, self._timed, preview.audio))

    def _timed(self, audio: np.ndarray) -> tuple[Transcript, float]:
        t0 = self._clock()
        try:
            return self._transcriber.transcribe(audio), self._clock() - t0
        finally:
            self.busy_s += self._clock() - t0

    async def _take_early(self, utt: Utterance) -> tuple[Transcript, float] | None:
        """The early transcript of ``utt`` when its preview had the same audio and the pass succeeded."""
        future = self._early.claim(utt)
        if future is None:
            return None
        try:
            return await future
        except Exception:
            logger.warning("the early transcription of %s failed; transcribing it again", utt.utterance_id)
            self._early.failed()
            return None

    async def run(self, inp: AsyncIterator[Utterance]) -> AsyncIterator[Transcribed]:
        loop = asyncio.get_running_loop()
        own = None if self._executor is not None else ThreadPoolExecutor(1, thread_name_prefix="whisper")
        executor = self._executor or own
        self._running = executor
        try:
            async for utt in inp:
                if utt.transcript is not None:  # made by the end-of-turn check on this same audio
                    self._early.drop(utt.utterance_id)
                    self.audio_s += utt.duration_s
                    self.reused += 1
                    yield Transcribed(utt, utt.transcript, None, utt.transcript_s)
                    continue
                early = await self._take_early(utt)
                if early is not None:  # transcribed while the segmenter waited for the end of the silence
                    self.audio_s += utt.duration_s
                    yield Transcribed(utt, early[0], None, early[1])
                    continue
                t0 = self._clock()
                try:
                    transcript = await loop.run_in_executor(executor, self._transcriber.transcribe, utt.audio)
                    error = None
                except Exception as exc:
                    logger.exception("transcribing %s failed", utt.utterance_id)
                    transcript, error = None, f"transcription failed: {type(exc).__name__}: {exc}"
                spent = self._clock() - t0
                self.busy_s += spent
                self.audio_s += utt.duration_s
                yield Transcribed(utt, transcript, error, spent)
        finally:
            self._running = self._executor
            self._early.clear()
            if own is not None:
                own.shutdown(wait=False, cancel_futures=True)
