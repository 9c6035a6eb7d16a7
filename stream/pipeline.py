"""Composition of the live pipeline: sources -> segmenting -> Whisper -> classifier -> events.

::

    source[i] --SegmentStage--+                                   (one task per stream)
                              +--> utterance queue --> TranscribeStage --> ClassifierStage --> events
    source[j] --SegmentStage--+      (bounded)           (1 thread)          (micro-batches)
                              |                                              ^
                              +--> audio features (1 thread) ----------------+

An utterance's audio features (when the checkpoint uses audio) start as soon as its speech ends,
while Whisper transcribes it, so the classifier only runs the small networks once the text is there.

Everything runs in one :class:`asyncio.TaskGroup`; blocking work (decoding, VAD, Whisper, the
classifier) runs in executors. Overflow policy: the utterance queue is bounded and *blocks* its
producers, so file replay slows down rather than losing speech, and the microphone -- which cannot
wait -- drops its oldest audio in its own buffer (counted, see ``stream.sources``). Queue depths,
drops and real-time factors go out in ``stats`` events.

A stream's ``end`` event comes after the last event of its last utterance.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream.events.bus import EventBus
from stream.protocol import SERVICE_STREAM
from stream.sources import AudioChunk, Source, SourceItem, SourceProblem
from stream.stages.classifier import Classified, ClassifierStage, Predictor
from stream.stages.segmenter import Framer, Segmenter, SegmenterParams, SpeechStart, Utterance, UtteranceEnd
from stream.stages.transcriber import Transcribed, Transcriber, TranscribeStage
from stream.stages.vad import FrameClassifier

__all__ = ["Pipeline", "SegmentStage", "SpeechBegan", "segmenter_params"]

logger = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 16000


@dataclass(frozen=True, slots=True)
class SpeechBegan:
    stream: str
    utterance_id: str
    start_s: float


SegmentItem = SpeechBegan | Utterance | SourceProblem


def segmenter_params(vad_cfg: Any, frame_samples: int) -> SegmenterParams:
    """``[vad]`` config -> :class:`SegmenterParams` for a classifier with ``frame_samples`` frames."""
    return SegmenterParams(
        frame_samples=frame_samples,
        sample_rate_hz=SAMPLE_RATE_HZ,
        pre_roll_ms=vad_cfg.pre_roll_ms,
        post_roll_ms=vad_cfg.post_roll_ms,
        min_speech_ms=vad_cfg.min_speech_ms,
        max_utterance_ms=round(vad_cfg.max_utterance_s * 1000),
        end_silence_ms=vad_cfg.end_silence_ms,
    )


class SegmentStage:
    """Chunks of one stream in; speech starts, finished utterances and source problems out.

    The VAD and the sans-I/O segmenter run per chunk in a worker thread. Source problems pass
    through unchanged; a gap in the samples (microphone drops or reconnects) closes the open utterance.
    """

    def __init__(
        self,
        stream_id: str,
        vad: FrameClassifier,
        params: SegmenterParams,
        *,
        speed: float | None = 1.0,
        executor: Executor | None = None,
    ) -> None:
        self.stream_id = stream_id
        self._vad = vad
        self._framer = Framer(vad.frame_samples)
        self._seg = Segmenter(params)
        self._speed = speed
        self._executor = executor
        self._count = 0
        self._current = ""
        self._last: AudioChunk | None = None
        self.audio_s = 0.0

    def _wall_time(self, sample: int) -> float:
        """When ``sample`` was heard: the latest chunk's arrival minus the audio still after it."""
        chunk = self._last
        if chunk is None:
            return 0.0
        if self._speed is None:
            return chunk.arrival
        return chunk.arrival - max(0, chunk.end_sample - sample) / (SAMPLE_RATE_HZ * self._speed)

    def _convert(self, outputs: Sequence[SpeechStart | UtteranceEnd]) -> list[SegmentItem]:
        items: list[SegmentItem] = []
        for out in outputs:
            if isinstance(out, SpeechStart):
                self._count += 1
                self._current = f"{self.stream_id}-{self._count}"
                items.append(SpeechBegan(self.stream_id, self._current, out.start_sample / SAMPLE_RATE_HZ))
            else:
                items.append(
                    Utterance(
                        stream=self.stream_id,
                        utterance_id=self._current,
                        start_s=out.start_sample / SAMPLE_RATE_HZ,
                        end_s=out.end_sample / SAMPLE_RATE_HZ,
                        speech_end_s=out.speech_end_sample / SAMPLE_RATE_HZ,
                        audio=(out.pcm.astype(np.float32) / 32768.0),
                        speech_end_at=self._wall_time(out.speech_end_sample),
                        forced=out.forced,
                    )
                )
        return items

    def _process(self, chunk: AudioChunk) -> list[SegmentItem]:
        gap, frames = self._framer.push(chunk.pcm, chunk.start_sample)
        items: list[SegmentItem] = []
        if gap:  # close what was open before the lost audio, timed against the chunks before it
            items += self._convert(self._seg.flush())
            self._vad.reset()
        self._last = chunk
        outputs: list[SpeechStart | UtteranceEnd] = []
        for start, frame in frames:
            outputs += self._seg.push(start, frame, self._vad.is_speech(frame))
        return items + self._convert(outputs)

    def _flush(self) -> list[SegmentItem]:
        return self._convert(self._seg.flush())

    async def run(self, inp: AsyncIterator[SourceItem]) -> AsyncIterator[SegmentItem]:
        loop = asyncio.get_running_loop()
        async for item in inp:
            if isinstance(item, SourceProblem):
                yield item
                continue
            self.audio_s += item.pcm.size / SAMPLE_RATE_HZ
            for out in await loop.run_in_executor(self._executor, self._process, item):
                yield out
        for out in self._flush():
            yield out


def _branches(pred: Any) -> dict[str, Any]:
    """``{"branches": {"text": label, "audio": label}}`` when the classifier reports its branches' own
    labels beside the fused one (a fusion checkpoint), else nothing."""
    branches = getattr(pred, "branches", None)
    return {"branches": dict(branches)} if branches else {}


async def _drain(queue: asyncio.Queue[Utterance | None]) -> AsyncIterator[Utterance]:
    while (item := await queue.get()) is not None:
        yield item


class Pipeline:
    """Runs every source to its end (a microphone never ends: cancel :meth:`run` to stop)."""

    def __init__(
        self,
        sources: Sequence[Source],
        *,
        vad_factory: Callable[[], FrameClassifier],
        vad_config: Any,
        transcriber: Transcriber,
        predictor: Predictor,
        bus: EventBus,
        max_batch: int = 16,
        batch_wait_ms: int = 5,
        utterance_queue: int = 32,
        stats_interval_s: float = 5.0,
        extra_stats: Callable[[], dict[str, Any]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        ids = [s.stream_id for s in sources]
        if len(set(ids)) != len(ids):
            raise ValueError(f"stream ids must be unique, got {ids}")
        self.sources = list(sources)
        self._vad_factory = vad_factory
        self._vad_cfg = vad_config
        self._bus = bus
        self._clock = clock
        self._sleep = sleep
        self._stats_interval_s = stats_interval_s
        self._extra_stats = extra_stats  # e.g. the hub's subscriber counts and drops
        self._vad_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vad")
        self._queue: asyncio.Queue[Utterance | None] = asyncio.Queue(utterance_queue)
        self._transcriber = transcriber
        self.asr = TranscribeStage(transcriber, clock=clock)
        self.classifier = ClassifierStage(predictor, max_batch=max_batch, batch_wait_ms=batch_wait_ms, clock=clock)
        # One encoder pass: the transcriber hands over the audio features from its own encoder output.
        self.classifier.features_from_asr = bool(getattr(transcriber, "provides_features", False))
        self._pending: dict[str, int] = dict.fromkeys(ids, 0)
        self._ended: dict[str, str | None] = dict.fromkeys(ids)  # reason once the source is done
        self._segments: dict[str, SegmentStage] = {}
        self._end_sent: dict[str, asyncio.Event] = {i: asyncio.Event() for i in ids}
        self._queue_full_waits = 0
        self._source_tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self.utterances = 0

    # Events ---------------------------------------------------------------------------------------

    async def _end_if_done(self, stream: str) -> None:
        reason = self._ended[stream]
        if reason is not None and self._pending[stream] == 0:
            if all(done.is_set() for sid, done in self._end_sent.items() if sid != stream):
                # The last stream to end: a final summary first, so that `end` is the run's last event.
                await self._bus.emit("stats", SERVICE_STREAM, self.stats())
            seg = self._segments.get(stream)
            await self._bus.emit("end", stream, {"reason": reason, "audio_s": round(seg.audio_s if seg else 0.0, 3)})
            self._ended[stream] = None
            self._pending.pop(stream)
            self._end_sent[stream].set()
            self.classifier.end_stream(stream)

    async def wait_ended(self, streams: Sequence[str]) -> None:
        """Return once every stream in ``streams`` has sent its ``end`` event."""
        for stream in streams:
            await self._end_sent[stream].wait()

    def stats(self) -> dict[str, Any]:
        streams = {s.stream_id: s.stats() for s in self.sources}
        extra = self._extra_stats() if self._extra_stats is not None else {}
        return {
            **extra,
            "queues": {"utterances": self._queue.qsize(), "classifier": self.classifier.depth},
            "queue_limits": {"utterances": self._queue.maxsize},
            "drops": {
                "mic_audio_s": round(sum(float(v.get("dropped_s", 0.0)) for v in streams.values()), 3),
                "utterance_queue_full": self._queue_full_waits,
                "sink_errors": sum(self._bus.sink_errors.values()),
                "feature_failures": self.classifier.feature_failures
                + int(getattr(self._transcriber, "feature_failures", 0)),
            },
            "rtf": {
                "asr": round(self.asr.rtf, 3),
                "features": round(self.classifier.features_rtf, 4),
                "classifier": round(self.classifier.rtf, 4),
            },
            # How Whisper decoded (WhisperTranscriber.paths: trimmed, padded, loop_redone, unsure_redone).
            "asr_paths": dict(getattr(self._transcriber, "paths", {})),
            "streams": streams,
            "utterances": self.utterances,
            "batches": self.classifier.batches,
        }

    # Tasks ----------------------------------------------------------------------------------------

    async def _run_source(self, source: Source) -> None:
        stream = source.stream_id
        vad = self._vad_factory()
        stage = SegmentStage(
            stream,
            vad,
            segmenter_params(self._vad_cfg, vad.frame_samples),
            speed=source.speed,
            executor=self._vad_executor,
        )
        self._segments[stream] = stage
        reason = "eof"
        if self._stopping:
            self._ended[stream] = "stopped"
            await self._end_if_done(stream)
            return
        try:
            async for item in stage.run(aiter(source)):
                if isinstance(item, SourceProblem):
                    await self._bus.emit("error", stream, {"code": item.code, "message": item.message})
                    if item.fatal:
                        reason = "error"
                        break
                elif isinstance(item, SpeechBegan):
                    data = {"state": "start", "utterance_id": item.utterance_id, "t_s": round(item.start_s, 3)}
                    await self._bus.emit("speech", stream, data)
                else:
                    await self._bus.emit(
                        "speech",
                        stream,
                        {
                            "state": "end",
                            "utterance_id": item.utterance_id,
                            "t_s": round(item.end_s, 3),
                            "start_s": round(item.start_s, 3),
                            "end_s": round(item.end_s, 3),
                            "forced": item.forced,
                        },
                    )
                    self._pending[stream] += 1
                    self.utterances += 1
                    self.classifier.prefetch(item)  # features run while Whisper transcribes
                    if self._queue.full():
                        self._queue_full_waits += 1
                    await self._queue.put(item)
        except asyncio.CancelledError:
            if not self._stopping:  # cancelled from outside (the TaskGroup): not ours to swallow
                raise
            reason = "stopped"  # stop(): utterances already ended still get their events
        except Exception as exc:  # one broken stream must not stop the others
            logger.exception("stream %s failed", stream)
            await self._bus.emit("error", stream, {"code": "source_failed", "message": f"{type(exc).__name__}: {exc}"})
            reason = "error"
        self._ended[stream] = reason
        await self._end_if_done(stream)

    async def _run_stages(self) -> None:
        transcribed = self._announce_transcripts(self.asr.run(_drain(self._queue)))
        async for out in self.classifier.run(transcribed):
            await self._emit_results(out)

    async def _announce_transcripts(self, items: AsyncIterator[Transcribed]) -> AsyncIterator[Transcribed]:
        """Send each ``transcript`` (or its error) as soon as Whisper is done, before classification."""
        async for item in items:
            await self._emit_transcript(item)
            yield item

    @staticmethod
    def _span(utt: Utterance) -> dict[str, Any]:
        return {"utterance_id": utt.utterance_id, "start_s": round(utt.start_s, 3), "end_s": round(utt.end_s, 3)}

    async def _emit_transcript(self, item: Transcribed) -> None:
        utt = item.utterance
        span = self._span(utt)
        if item.transcript is not None:
            t = item.transcript
            await self._bus.emit(
                "transcript",
                utt.stream,
                {
                    **span,
                    "text": t.text,
                    "language": t.language,
                    "avg_logprob": t.avg_logprob,
                    "no_speech_prob": t.no_speech_prob,
                    "dropped": t.dropped,
                    "asr_ms": round(item.asr_s * 1000, 1),
                },
            )
        else:
            await self._bus.emit("error", utt.stream, {"code": "stage_failed", "message": item.error or "", **span})

    async def _emit_results(self, out: Classified) -> None:
        item: Transcribed = out.item
        utt = item.utterance
        span = self._span(utt)
        text = item.transcript.text if item.transcript is not None else ""
        pred = out.prediction
        if pred is not None:
            total = sum(float(v) for v in pred.scores.values()) or 1.0
            await self._bus.emit(
                "emotion",
                utt.stream,
                {
                    **span,
                    "text": text,
                    "label": pred.label,
                    "scores": {k: round(float(v) / total, 6) for k, v in pred.scores.items()},
                    "modalities": list(pred.modalities),
                    **_branches(pred),
                    "latency_ms": round(max(0.0, self._clock() - utt.speech_end_at) * 1000, 1),
                },
            )
        elif out.error and not out.error.startswith("no usable modality"):
            await self._bus.emit("error", utt.stream, {"code": "stage_failed", "message": out.error, **span})
        self._pending[utt.stream] -= 1
        await self._end_if_done(utt.stream)

    async def _stats_loop(self) -> None:
        while True:
            await self._sleep(self._stats_interval_s)
            await self._bus.emit("stats", SERVICE_STREAM, self.stats())

    def stop(self) -> None:
        """Stop reading the sources (``end`` reason ``stopped``); utterances whose speech already ended
        still go through Whisper and the classifier, then :meth:`run` returns."""
        self._stopping = True
        for task in self._source_tasks:
            task.cancel()

    @property
    def in_flight(self) -> int:
        """Utterances whose speech ended but whose events are not all out yet."""
        return sum(self._pending.values())

    async def run(self) -> None:
        """Run until every source has ended and every utterance has its events."""
        try:
            async with asyncio.TaskGroup() as tg:
                stats = tg.create_task(self._stats_loop())
                sources = [tg.create_task(self._run_source(s)) for s in self.sources]
                self._source_tasks = sources

                async def close_queue() -> None:
                    await asyncio.gather(*sources)
                    await self._queue.put(None)

                tg.create_task(close_queue())
                await self._run_stages()
                stats.cancel()
        finally:
            self._vad_executor.shutdown(wait=False, cancel_futures=True)
