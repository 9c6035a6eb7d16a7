"""Records in, events out: what the pipeline tells its subscribers, each stream's end, and ``stats``.

:class:`Report` turns the records of :mod:`stream.records` into events (payloads from
:mod:`stream.protocol`) and keeps the per-stream accounting that orders them: a stream's ``end`` goes
out only once its source has ended *and* every utterance it produced has its events, and the run's
last stream to end is preceded by a final ``stats``, so that ``end`` is the run's last event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from stream.events.bus import EventBus
from stream.protocol import (
    SERVICE_STREAM,
    Stats,
    emotion_data,
    end_data,
    error_data,
    speech_end_data,
    speech_start_data,
    transcript_data,
)
from stream.records import (
    Classified,
    SegmentItem,
    SourceProblem,
    SpeechBegan,
    Transcribed,
    Utterance,
    UtterancePreview,
)
from stream.sources import Source
from stream.stages.classifier import ClassifierStage
from stream.stages.transcriber import TranscribeStage

__all__ = ["Report"]


class Report:
    """The pipeline's voice: one per run, fed by the composition at each step of the data path."""

    def __init__(
        self,
        bus: EventBus,
        sources: Sequence[Source],
        *,
        transcribe: TranscribeStage,
        classify: ClassifierStage,
        utterances: asyncio.Queue[Utterance | None],
        extra_stats: Callable[[], dict[str, Any]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        ids = [s.stream_id for s in sources]
        self._bus = bus
        self._sources = sources  # the pipeline's list: sources added while running are in it too
        self._transcribe = transcribe
        self._classify = classify
        self._queue = utterances
        self._extra_stats = extra_stats  # e.g. the hub's subscriber counts and drops
        self._clock = clock
        self._pending: dict[str, int] = dict.fromkeys(ids, 0)  # utterances whose events are not all out
        self._reason: dict[str, str | None] = dict.fromkeys(ids)  # why the source ended, once it has
        self._audio_s: dict[str, float] = dict.fromkeys(ids, 0.0)
        self._end_sent: dict[str, asyncio.Event] = {i: asyncio.Event() for i in ids}
        self.utterances = 0
        self.queue_full_waits = 0  # times a source waited for room in the utterance queue

    def add_stream(self, stream: str) -> None:
        """A source added while running (its events and ``end`` like any other's)."""
        self._pending[stream] = 0
        self._reason[stream] = None
        self._audio_s[stream] = 0.0
        self._end_sent[stream] = asyncio.Event()

    def has_stream(self, stream: str) -> bool:
        """Whether ``stream`` is taken in this run (running or ended)."""
        return stream in self._end_sent

    # The data path, in order -------------------------------------------------------------------------

    async def segments(
        self, stream: str, items: AsyncIterator[SegmentItem]
    ) -> AsyncIterator[Utterance | UtterancePreview]:
        """``speech`` and ``error`` events for one stream's segment items; its utterances (and their
        previews, which are no event) pass on.

        A fatal source problem ends the stream (reason ``error``).
        """
        async for item in items:
            if isinstance(item, UtterancePreview):
                yield item
            elif isinstance(item, SourceProblem):
                await self._bus.emit("error", stream, error_data(item.code, item.message))
                if item.fatal:
                    self._reason[stream] = "error"
                    return
            elif isinstance(item, SpeechBegan):
                await self._bus.emit("speech", stream, speech_start_data(item))
            else:
                await self._bus.emit("speech", stream, speech_end_data(item))
                self._pending[stream] += 1
                self.utterances += 1
                yield item

    async def transcripts(self, items: AsyncIterator[Transcribed]) -> AsyncIterator[Transcribed]:
        """Send each ``transcript`` (or its error) as soon as Whisper is done, before classification."""
        async for item in items:
            utt = item.utterance
            if item.transcript is not None:
                await self._bus.emit("transcript", utt.stream, transcript_data(item))
            else:
                await self._bus.emit("error", utt.stream, error_data("stage_failed", item.error or "", utterance=utt))
            yield item

    async def classified(self, out: Classified) -> None:
        """The ``emotion`` (or its error) of one utterance; then its stream's ``end`` when it was the last."""
        utt = out.item.utterance
        if out.prediction is not None:
            latency_s = self._clock() - utt.speech_end_at  # from when the end of speech was heard
            await self._bus.emit("emotion", utt.stream, emotion_data(out, latency_s=latency_s))
        elif out.error and not out.unclassifiable:
            await self._bus.emit("error", utt.stream, error_data("stage_failed", out.error, utterance=utt))
        self._pending[utt.stream] -= 1
        await self._end_if_done(utt.stream)

    async def source_failed(self, stream: str, exc: Exception) -> None:
        """A source (or its segmenting) raised: report it; the stream ends with reason ``error``."""
        await self._bus.emit("error", stream, error_data("source_failed", f"{type(exc).__name__}: {exc}"))
        self._reason[stream] = "error"

    async def source_ended(self, stream: str, reason: str, *, audio_s: float) -> None:
        """The source is done (``reason`` unless a failure was reported); ``end`` follows its last utterance."""
        self._reason[stream] = self._reason[stream] or reason
        self._audio_s[stream] = audio_s
        await self._end_if_done(stream)

    async def _end_if_done(self, stream: str) -> None:
        reason = self._reason[stream]
        if reason is None or self._pending[stream] != 0 or self._end_sent[stream].is_set():
            return
        if all(done.is_set() for sid, done in self._end_sent.items() if sid != stream):
            # The last stream to end: a final summary first, so that `end` is the run's last event.
            await self._bus.emit("stats", SERVICE_STREAM, self.stats())
        await self._bus.emit("end", stream, end_data(reason, audio_s=self._audio_s[stream]))
        self._end_sent[stream].set()
        self._classify.end_stream(stream)  # its past-context window and running audio statistics go with it

    # Progress --------------------------------------------------------------------------------------

    async def wait_ended(self, streams: Sequence[str]) -> None:
        """Return once every stream in ``streams`` has sent its ``end`` event."""
        for stream in streams:
            await self._end_sent[stream].wait()

    @property
    def in_flight(self) -> int:
        """Utterances whose speech ended but whose events are not all out yet."""
        return sum(n for s, n in self._pending.items() if not self._end_sent[s].is_set())

    async def stats_loop(self, interval_s: float) -> None:
        """A ``stats`` event every ``interval_s`` (cancel to stop)."""
        while True:
            await asyncio.sleep(interval_s)
            await self._bus.emit("stats", SERVICE_STREAM, self.stats())

    def stats(self) -> dict[str, Any]:
        """The ``stats`` payload: queue depths and limits, drops, real-time factors, counts."""
        streams = {s.stream_id: s.stats() for s in self._sources}
        return Stats(
            queues={"utterances": self._queue.qsize(), "classifier": self._classify.depth},
            queue_limits={"utterances": self._queue.maxsize},
            drops={
                "mic_audio_s": round(sum(float(v.get("dropped_s", 0.0)) for v in streams.values()), 3),
                "utterance_queue_full": self.queue_full_waits,
                "sink_errors": sum(self._bus.sink_errors.values()),
                "feature_failures": self._classify.feature_failures,
            },
            rtf={
                "asr": round(self._transcribe.rtf, 3),
                "features": round(self._classify.features_rtf, 4),
                "classifier": round(self._classify.rtf, 4),
            },
            asr_paths=self._transcribe.paths,
            streams=streams,
            utterances=self.utterances,
            batches=self._classify.batches,
            extra=self._extra_stats() if self._extra_stats is not None else {},
        ).to_data()
