"""The live pipeline, composed: sources -> segment -> transcribe -> classify -> report.

::

    source[i] -> SegmentStage -+                       (one task per stream; VAD thread)
                               +-> utterance queue -> TranscribeStage -> Report.transcripts -> ClassifierStage
    source[j] -> SegmentStage -+     (32, blocks)       (Whisper thread)    (`transcript`)     (classifier thread)
                               |                                                                     |
                               +-> ClassifierStage.prefetch: audio features (features thread) -------+
                                                                                                     v
                                                                              Report.classified (`emotion`, `end`)

An utterance's audio features and its speaker (``stream.stages.speakers``, own thread) start as soon as
its speech ends, while Whisper transcribes it, so the classifier only runs the small networks once the
text is there and the speaker label is normally ready before it; ``transcript`` and ``emotion`` carry
it, and a merge of two labels found to be one person goes out first as a ``speaker`` event. All three
start even earlier on an utterance's *preview* (``vad.early_start_ms``: once its post-roll of silence
has passed, its audio is known, while the segmenter still waits for ``end_silence_ms``); the work is
used when the utterance ends with that audio, so Whisper leaves the critical path. At a short
pause inside an utterance, :class:`SegmentStage` may ask Whisper whether the words so far end a
sentence (the end-of-turn check, ``vad.end_of_turn_pause_ms``). Everything runs in one
:class:`asyncio.TaskGroup`; blocking work runs in the four one-worker thread pools this class owns
and shuts down. Overflow: the utterance queue is bounded and *blocks* its producers, so file replay
slows down rather than losing speech; the microphone drops its oldest audio in its own buffer
(``stream.sources``). Events, end-of-stream accounting and ``stats``: :mod:`stream.report`.
Sources may join a running pipeline (:meth:`Pipeline.add_source`: uploads, browser microphones);
with ``keep_open`` the run waits for them after its own sources end, until :meth:`Pipeline.stop`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from stream.config import Config
from stream.events.bus import EventBus
from stream.protocol import speaker_corrected_data, speaker_merged_data, speaker_named_data
from stream.records import Transcribed, Utterance, UtterancePreview
from stream.report import Report
from stream.sources import Source
from stream.stages.classifier import ClassifierStage, Predictor
from stream.stages.segment import SegmentStage, change_params, segmenter_params
from stream.stages.speakers import SpeakerStage
from stream.stages.transcriber import Transcriber, TranscribeStage
from stream.stages.vad import make_vad

__all__ = ["UTTERANCE_QUEUE", "Pipeline"]

logger = logging.getLogger(__name__)

UTTERANCE_QUEUE = 32  # utterances waiting for Whisper; a full queue makes the sources wait


class Pipeline:
    """Runs every source to its end (a microphone never ends: :meth:`stop` or cancel :meth:`run`)."""

    def __init__(  # noqa: PLR0913 (the optional speaker stage is the 9th: a model, not a config section)
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
        speakers: SpeakerStage | None = None,
    ) -> None:
        """``keep_open``: the run goes on after its sources end, for sources added later
        (:meth:`add_source`), until :meth:`stop`. ``speakers``: the speaker stage (None: no labels)."""
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
        self.speakers = speakers
        self._bus = bus
        # The end-of-turn check asks Whisper about open utterances: only a transcriber whose answer depends
        # on the audio alone may be asked (scripted test transcribers answer in call order).
        turns_on = config.vad.end_of_turn_pause_ms > 0 and getattr(transcriber, "stateless", False)
        self._turn_check = self.asr.end_of_turn if turns_on else None
        # Early start (previews of utterances about to end) likewise needs answers that depend on the audio alone.
        self._early_on = config.vad.early_start_ms > 0 and getattr(transcriber, "stateless", False)
        self._segments: list[SegmentStage] = []

        def more_stats() -> dict[str, Any]:
            return {**(extra_stats() if extra_stats is not None else {}), **self._own_stats()}

        self.report = Report(
            bus,
            self.sources,
            transcribe=self.asr,
            classify=self.classifier,
            utterances=self._utterances,
            extra_stats=more_stats,
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
                transcribed = self.report.transcripts(self._with_speakers(self.asr.run(_drain(self._utterances))))
                async for classified in self.classifier.run(transcribed):
                    await self.report.classified(classified)
                stats.cancel()
        finally:
            self._tg = None
            for pool in self._threads.values():
                pool.shutdown(wait=False, cancel_futures=True)
            if self.speakers is not None:
                self.speakers.close()

    async def _with_speakers(self, items: AsyncIterator[Transcribed]) -> AsyncIterator[Transcribed]:
        """Each transcribed utterance with its speaker label; merges and corrections it revealed go out first."""
        async for item in items:
            if self.speakers is None:
                yield item
                continue
            utt = item.utterance
            result = await self.speakers.result(utt)
            for merge in result.merges:
                await self._bus.emit("speaker", utt.stream, speaker_merged_data(merge.source, merge.into, utt))
            for fix in result.corrections:
                await self._bus.emit("speaker", utt.stream, speaker_corrected_data(fix.was, fix.into, fix.key))
            yield dataclasses.replace(item, speaker=result.speaker)

    async def name_speaker(self, stream: str, speaker: str, name: str) -> None:
        """A client named a speaker: remember it and tell everyone (``ValueError`` when unknown)."""
        if not self.has_stream(stream):
            raise ValueError(f"no stream {stream!r} in this run")
        if self.speakers is None:
            raise ValueError("the speaker stage is off ([speakers] enabled = false)")
        self.speakers.rename(stream, speaker, name)
        await self._bus.emit("speaker", stream, speaker_named_data(speaker, name))

    def _own_stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            # End of turn: pauses checked, utterances ended there, sentence ends the next reading ran on
            # past (vad.end_of_turn_confirm), transcripts reused from those checks.
            "turns": {
                "checks": sum(seg.turn_checks for seg in self._segments),
                "ends": sum(seg.turn_ends for seg in self._segments),
                "unconfirmed": sum(seg.turn_unconfirmed for seg in self._segments),
                # ends that stood on the voice alone (vad.end_of_turn_voice_similarity), among "ends"
                "voice_ends": sum(seg.turn_voice_ends for seg in self._segments),
                "reused": self.asr.reused,
                # segments cut at a change of speaker (vad.speaker_change_score)
                "change_cuts": sum(seg.change_cuts for seg in self._segments),
            },
            # Early start: previews transcribed, used for their utterance, and dropped (speech resumed).
            "early": dict(self.asr.early),
        }
        if self.speakers is not None:
            out["speakers"] = {"rtf": round(self.speakers.rtf, 4), "failures": self.speakers.failures}
        return out

    async def _segment(self, source: Source) -> None:
        """One source through its segment stage into the utterance queue (its audio features start here)."""
        vad = make_vad(self._config.vad)
        params = segmenter_params(self._config.vad, vad.frame_samples)
        if not self._early_on:
            params = dataclasses.replace(params, early_start_ms=0)
        segment = SegmentStage(
            source.stream_id,
            vad,
            params,
            speed=source.speed,
            executor=self._threads["vad"],
            first_utterance=getattr(source, "first_utterance", 0),
            turn_check=self._turn_check,
            change=change_params(self._config.vad),
            voice=self.speakers.voice if self.speakers is not None else None,
        )
        self._segments.append(segment)
        reason = "stopped" if self._stopping else "eof"
        try:
            if self.speakers is not None:  # enrolled speakers (--speaker NAME=CLIP) are named from the start
                for label, name in self.speakers.enrolled(source.stream_id).items():
                    await self._bus.emit("speaker", source.stream_id, speaker_named_data(label, name))
            if not self._stopping:
                async for utt in self.report.segments(source.stream_id, segment.run(aiter(source))):
                    if isinstance(utt, UtterancePreview):
                        self._start_early(utt.utterance)
                        continue
                    self.classifier.prefetch(utt)  # audio features run while Whisper transcribes
                    if self.speakers is not None:
                        self.speakers.start(utt)  # so does the speaker embedding
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

    def _start_early(self, preview: Utterance) -> None:
        """The utterance as it will be if the silence under way ends it: Whisper, the speaker embedding
        and the audio features start on it now (``vad.early_start_ms``); the stages use that work when
        the utterance ends with the same audio."""
        self.asr.start_early(preview)
        if self.speakers is not None:
            self.speakers.preview(preview)
        self.classifier.prefetch(preview)

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
