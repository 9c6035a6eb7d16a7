"""The live pipeline, composed: sources -> segment -> transcribe -> classify -> report.

::

    source[i] -> SegmentStage -+                       (one task per stream; VAD thread)
                               +-> utterance queue -> TranscribeStage -> Report.transcripts -> ClassifierStage
    source[j] -> SegmentStage -+     (32, blocks)       (Whisper thread)    (`transcript`)     (classifier thread)
                               |                                                                     |
                               +-> ClassifierStage.prefetch: audio features (features thread) -------+
                                                                                                     v
                                                                              Report.classified (`emotion`, `end`)

An utterance's audio features start as soon as its speech ends, while Whisper transcribes it, so the
classifier only runs the small networks once the text is there. Everything runs in one
:class:`asyncio.TaskGroup`; blocking work runs in the four one-worker thread pools this class owns
and shuts down. Overflow: the utterance queue is bounded and *blocks* its producers, so file replay
slows down rather than losing speech; the microphone drops its oldest audio in its own buffer
(``stream.sources``). Events, end-of-stream accounting and ``stats``: :mod:`stream.report`.
Sources may join a running pipeline (:meth:`Pipeline.add_source`: uploads, browser microphones);
with ``keep_open`` the run waits for them after its own sources end, until :meth:`Pipeline.stop`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from stream.config import Config
from stream.events.bus import EventBus
from stream.records import Utterance
from stream.report import Report
from stream.sources import Source
from stream.stages.classifier import ClassifierStage, Predictor
from stream.stages.segment import SegmentStage, segmenter_params
from stream.stages.transcriber import Transcriber, TranscribeStage
from stream.stages.vad import make_vad

__all__ = ["UTTERANCE_QUEUE", "Pipeline"]

logger = logging.getLogger(__name__)

UTTERANCE_QUEUE = 32  # utterances waiting for Whisper; a full queue makes the sources wait


class Pipeline:
    """Runs every source to its end (a microphone never ends: :meth:`stop` or cancel :meth:`run`)."""

    def __init__(
        self,
        sources: Sequence[Source],
        bus: EventBus,
        *,
        transcriber: Transcriber,
        predictor: Predictor,
        config: Config = Config(),  # noqa: B008 (frozen, so one shared default is safe)
        extra_stats: Callable[[], dict[str, Any]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        keep_open: bool = False,
    ) -> None:
        """``keep_open``: the run goes on after its sources end, for sources added later
        (:meth:`add_source`), until :meth:`stop`."""
        ids = [s.stream_id for s in sources]
        if len(set(ids)) != len(ids):
            raise ValueError(f"stream ids must be unique, got {ids}")
        self.sources = list(sources)
        self._config = config
        self._threads = {name: ThreadPoolExecutor(1, thread_name_prefix=name) for name in _THREADS}
        self._utterances: asyncio.Queue[Utterance | None] = asyncio.Queue(UTTERANCE_QUEUE)
        self.asr = TranscribeStage(transcriber, executor=self._threads["whisper"], clock=clock)
        self.classifier = ClassifierStage(
            predictor,
            config.classifier,
            executor=self._threads["classifier"],
            features_executor=self._threads["features"],
            clock=clock,
        )
        # One encoder pass: the transcriber hands over the audio features from its own encoder output.
        self.classifier.features_from_asr = bool(getattr(transcriber, "provides_features", False))
        self.report = Report(
            bus,
            self.sources,
            transcribe=self.asr,
            classify=self.classifier,
            utterances=self._utterances,
            extra_stats=extra_stats,
            clock=clock,
        )
        self._source_tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._keep_open = keep_open
        self._sources_changed = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None

    async def run(self) -> None:
        """Run until every source has ended and every utterance has its events."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                stats = tg.create_task(self.report.stats_loop(self._config.server.stats_interval_s))
                self._source_tasks = [tg.create_task(self._segment(s)) for s in self.sources]
                tg.create_task(self._close_queue_when_done())
                transcribed = self.report.transcripts(self.asr.run(_drain(self._utterances)))
                async for classified in self.classifier.run(transcribed):
                    await self.report.classified(classified)
                stats.cancel()
        finally:
            self._tg = None
            for pool in self._threads.values():
                pool.shutdown(wait=False, cancel_futures=True)

    async def _segment(self, source: Source) -> None:
        """One source through its segment stage into the utterance queue (its audio features start here)."""
        vad = make_vad(self._config.vad)
        params = segmenter_params(self._config.vad, vad.frame_samples)
        segment = SegmentStage(source.stream_id, vad, params, speed=source.speed, executor=self._threads["vad"])
        reason = "stopped" if self._stopping else "eof"
        try:
            if not self._stopping:
                async for utt in self.report.segments(source.stream_id, segment.run(aiter(source))):
                    self.classifier.prefetch(utt)  # audio features run while Whisper transcribes
                    if self._utterances.full():
                        self.report.queue_full_waits += 1
                    await self._utterances.put(utt)
        except asyncio.CancelledError:
            if not self._stopping:  # cancelled from outside (the TaskGroup): not ours to swallow
                raise
            reason = "stopped"  # stop(): utterances already ended still get their events
        except Exception as exc:  # one broken stream must not stop the others
            logger.exception("stream %s failed", source.stream_id)
            await self.report.source_failed(source.stream_id, exc)
        await self.report.source_ended(source.stream_id, reason, audio_s=segment.audio_s)

    async def _close_queue_when_done(self) -> None:
        """End Whisper's input once every source (added ones too) has ended and no more can come."""
        while True:
            self._sources_changed.clear()
            tasks = list(self._source_tasks)
            # A source cancelled before it ran (stop() right after add_source) must not end the run.
            await asyncio.gather(*tasks, return_exceptions=True)
            if len(tasks) != len(self._source_tasks):
                continue  # one was added meanwhile
            if not self._keep_open or self._stopping:
                break
            await self._sources_changed.wait()
        await self._utterances.put(None)

    def stop(self) -> None:
        """Stop reading the sources (``end`` reason ``stopped``); utterances whose speech already ended
        still go through Whisper and the classifier, then :meth:`run` returns."""
        self._stopping = True
        self._sources_changed.set()
        for task in self._source_tasks:
            task.cancel()

    def has_stream(self, stream_id: str) -> bool:
        """Whether ``stream_id`` is taken in this run (running or ended)."""
        return self.report.has_stream(stream_id)

    def add_source(self, source: Source) -> None:
        """Start ``source`` as a new stream of the running pipeline (an upload, the page's microphone).

        Raises ``ValueError`` when its id is taken and ``RuntimeError`` when the pipeline is not
        running or is stopping.
        """
        stream = source.stream_id
        if self.has_stream(stream):
            raise ValueError(f"stream id {stream!r} is already used in this run")
        if self._tg is None or self._stopping:
            raise RuntimeError("the pipeline is not running")
        self.sources.append(source)
        self.report.add_stream(stream)
        self._source_tasks.append(self._tg.create_task(self._segment(source), name=f"source-{stream}"))
        self._sources_changed.set()

    async def wait_ended(self, streams: Sequence[str]) -> None:
        """Return once every stream in ``streams`` has sent its ``end`` event."""
        await self.report.wait_ended(streams)

    @property
    def in_flight(self) -> int:
        """Utterances whose speech ended but whose events are not all out yet."""
        return self.report.in_flight

    def stats(self) -> dict[str, Any]:
        return self.report.stats()


_THREADS = ("vad", "whisper", "classifier", "features")


async def _drain(queue: asyncio.Queue[Utterance | None]) -> AsyncIterator[Utterance]:
    while (item := await queue.get()) is not None:
        yield item
