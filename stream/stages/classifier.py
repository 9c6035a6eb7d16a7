"""The classifier stage: transcribed utterances in, emotion decisions out, micro-batched across streams.

Utterances that are ready at about the same time (within ``batch_wait_ms``, at most ``max_batch``)
are classified in one ``predict`` call in a worker thread. Each row gets the modalities it has and
the checkpoint uses: no text when Whisper's text was empty or dropped, no audio when the checkpoint
has no audio branch (so its features are never computed). A row with neither is not classified.

Audio features ahead of time: when the predictor can take precomputed feature vectors
(:class:`FeaturePredictor`, e.g. ``EmotionPredictor``), :meth:`ClassifierStage.prefetch` starts an
utterance's features in their own one-worker executor as soon as its speech ends, so they are
computed while Whisper transcribes it; the classifier then only runs the small networks on the text
and the ready vector. A row whose features fail is classified on its text alone (an error when it
has no text either). Rows never prefetched get their features started when they reach the stage.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np

from stream.config import ClassifierConfig
from stream.records import Classified, PredictionLike, Transcribed, Utterance
from stream.stages.context import ContextRow, ContextWindows, Plan
from stream.stages.early import EarlyWork

__all__ = ["ClassifierStage", "FeaturePredictor", "Predictor", "load_predictor"]

logger = logging.getLogger(__name__)


class Predictor(Protocol):
    """What ``training.inference.EmotionPredictor`` offers the stage."""

    labels: tuple[str, ...]
    uses_audio: bool
    uses_text: bool
    model_ids: dict[str, str]

    def predict(self, texts: Sequence[str | None], audio: Sequence[np.ndarray | None]) -> Sequence[PredictionLike]: ...


class FeaturePredictor(Predictor, Protocol):
    """A :class:`Predictor` whose audio features can be computed apart from the classification."""

    def audio_features(self, audio: Sequence[np.ndarray]) -> np.ndarray: ...

    def predict_features(
        self, texts: Sequence[str | None], features: Sequence[np.ndarray | None]
    ) -> Sequence[PredictionLike]: ...


def takes_features(predictor: Predictor) -> bool:
    """Whether ``predictor`` uses audio and can take precomputed feature vectors."""
    return predictor.uses_audio and all(
        callable(getattr(predictor, name, None)) for name in ("audio_features", "predict_features")
    )


def load_predictor(path: str, *, device: str = "auto", text_dtype: str = "float32") -> Predictor:
    """``EmotionPredictor.from_checkpoint`` with an error naming the file and the fix when it is missing."""
    from pathlib import Path

    if not Path(path).is_file():
        raise FileNotFoundError(
            f"classifier checkpoint {path} does not exist; train one with `emostream-train` or pass --checkpoint PATH"
        )
    from training.inference import EmotionPredictor

    predictor: Predictor = EmotionPredictor.from_checkpoint(path, device=device, text_dtype=text_dtype)
    return predictor


class ClassifierStage:
    """``Transcribed`` in, ``Classified`` out; see the module docstring for batching and modalities."""

    def __init__(
        self,
        predictor: Predictor,
        config: ClassifierConfig = ClassifierConfig(),  # noqa: B008 (frozen, so one shared default is safe)
        *,
        queue_items: int = 64,
        executor: Executor | None = None,
        features_executor: Executor | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``executor`` (classification) and ``features_executor`` belong to the caller; when not given,
        each :meth:`run` makes its own and shuts them down at its end."""
        self._predictor = predictor
        # Past context: read when it is on and the checkpoint can; speaker tags whenever the
        # checkpoint's text branch was trained on tagged lines.
        self._speaker_tags = bool(getattr(predictor, "speaker_tags", False))
        self.reads_context = bool(
            config.context and getattr(predictor, "uses_context", False) and config.context_utterances
        )
        # A checkpoint that reads its past lines inside the encoder's input gets their words (same switch).
        self._past_lines = int(getattr(predictor, "past_lines", 0) or 0) if config.context else 0
        self._windows: ContextWindows | None = None
        if self._speaker_tags or self.reads_context:
            # No more than the checkpoint's context module reads, so that an event names only what was read.
            limit = int(getattr(predictor, "context_utterances", 0) or 0)
            most = min(config.context_utterances, limit) if limit else config.context_utterances
            self._windows = ContextWindows(most, config.context_window_s)
        self._max_batch = config.max_batch
        self._wait_s = config.batch_wait_ms / 1000
        self._queue_items = max(queue_items, config.max_batch)
        self._executor = executor
        self._clock = clock
        # Features get their own thread: they run while Whisper works on the same utterance.
        self._feature_predictor: FeaturePredictor | None = None
        self._features_executor = features_executor
        if takes_features(predictor):
            self._feature_predictor = predictor  # type: ignore[assignment]
        # Each utterance's (or its preview's) feature vector under way.
        self._features: EarlyWork[asyncio.Future[np.ndarray]] = EarlyWork()
        # True when the transcriber's own encoder pass yields the features (Transcript.features): then
        # nothing is prefetched, and only an utterance arriving without them gets its own pass.
        self.features_from_asr = False
        # The predictor normalises audio by running statistics: it gets each row's stream, and with
        # audio_norm = "speaker" each row's speaker label too (the speaker stage's, per stream).
        self._stream_keys = callable(getattr(predictor, "reset_stream", None)) and config.audio_norm != "off"
        self._speaker_keys = config.audio_norm == "speaker"
        self.features_busy_s = 0.0
        self.feature_failures = 0
        self.batches = 0
        self.items = 0
        self.unclassifiable = 0
        self.busy_s = 0.0
        self.audio_s = 0.0
        self._queue: asyncio.Queue[Transcribed | None] | None = None

    @property
    def depth(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    @property
    def rtf(self) -> float:
        """Seconds of classification (features included when they are not precomputed) per audio second."""
        return self.busy_s / self.audio_s if self.audio_s else 0.0

    @property
    def features_rtf(self) -> float:
        """Seconds spent on precomputed audio features per second of classified audio."""
        return self.features_busy_s / self.audio_s if self.audio_s else 0.0

    def prefetch(self, utt: Utterance) -> None:
        """Start ``utt``'s audio features now (call on the event loop when its speech ends, or on its
        preview: work on the same audio is not redone); a no-op when the predictor has no audio branch
        or cannot take precomputed features."""
        if not self.features_from_asr:
            self._start_features(utt)

    def _start_features(self, utt: Utterance) -> None:
        if self._feature_predictor is None or utt.audio.size == 0:
            return
        if self._features.has(utt):
            return
        # Work made on a preview whose audio the utterance did not end with is dropped by put().
        loop = asyncio.get_running_loop()
        self._features.put(utt, loop.run_in_executor(self._features_executor, self._extract, utt.audio))

    def _extract(self, audio: np.ndarray) -> np.ndarray:
        assert self._feature_predictor is not None
        t0 = self._clock()
        try:
            return np.asarray(self._feature_predictor.audio_features([audio])[0], dtype=np.float32)
        finally:
            self.features_busy_s += self._clock() - t0

    async def _with_features(
        self, batch: list[Transcribed], rows: list[tuple[str | None, np.ndarray | None]]
    ) -> tuple[list[tuple[str | None, np.ndarray | None]], dict[int, str]]:
        """Replace each row's audio by its feature vector; a row whose features failed loses its audio
        (``failed`` maps it to why)."""
        waits: dict[int, asyncio.Future[np.ndarray]] = {}
        out = list(rows)
        for i, (_, audio) in enumerate(rows):
            if audio is not None:
                utt = batch[i].utterance
                transcript = batch[i].transcript
                ready = transcript.features if transcript is not None else None
                if ready is not None:  # from Whisper's own encoder pass
                    self._features.drop(utt.utterance_id)
                    out[i] = (rows[i][0], ready)
                    continue
                self._start_features(utt)  # a no-op when it was prefetched
                future = self._features.claim(utt)
                assert future is not None  # just started on this very audio
                waits[i] = future
        done = await asyncio.gather(*waits.values(), return_exceptions=True)
        failed: dict[int, str] = {}
        for i, res in zip(waits, done, strict=True):
            if isinstance(res, BaseException):
                if not isinstance(res, Exception):
                    raise res
                self.feature_failures += 1
                failed[i] = f"audio features failed: {type(res).__name__}: {res}"
                logger.warning("%s for %s; classifying its text alone", failed[i], batch[i].utterance.utterance_id)
                out[i] = (rows[i][0], None)
            else:
                out[i] = (rows[i][0], res)
        return out, failed

    def _row(self, item: Transcribed) -> tuple[str | None, np.ndarray | None]:
        text = item.transcript.text.strip() if item.transcript is not None else ""
        use_text = self._predictor.uses_text and bool(text)
        use_audio = self._predictor.uses_audio and item.utterance.audio.size > 0
        return (text if use_text else None), (item.utterance.audio if use_audio else None)

    async def run(self, inp: AsyncIterator[Transcribed]) -> AsyncIterator[Classified]:
        # Bounded hand-off: when classification falls behind, the pump waits (back-pressure to
        # Whisper and on to the sources; only the microphone's own buffer ever drops audio).
        queue: asyncio.Queue[Transcribed | None] = asyncio.Queue(self._queue_items)
        self._queue = queue

        async def pump() -> None:
            try:
                async for item in inp:
                    await queue.put(item)
            finally:
                await queue.put(None)

        given = (self._executor, self._features_executor)
        owned = self._own_executors()
        task = asyncio.create_task(pump())
        try:
            while batch := await self._next_batch(queue):
                for out in await self._classify(batch):
                    yield out
            await task  # re-raise a failure of the input
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for pool in owned:
                pool.shutdown(wait=False, cancel_futures=True)
            self._executor, self._features_executor = given

    def _own_executors(self) -> list[ThreadPoolExecutor]:
        """One-worker pools for what the caller gave no executor for (shut down when run() ends)."""
        owned = []
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="classifier")
            owned.append(self._executor)
        if self._feature_predictor is not None and self._features_executor is None:
            self._features_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="features")
            owned.append(self._features_executor)
        return owned

    async def _next_batch(self, queue: asyncio.Queue[Transcribed | None]) -> list[Transcribed]:
        """What is ready within ``batch_wait_ms`` of the first item, at most ``max_batch``; [] at the end.

        The end marker is put back when it arrives mid-batch, so that the next call returns [].
        """
        first = await queue.get()
        if first is None:
            return []
        batch = [first]
        deadline = self._clock() + self._wait_s
        while len(batch) < self._max_batch:
            try:
                nxt = queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    break
                try:
                    nxt = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    break
            if nxt is None:
                queue.put_nowait(None)  # room: it was just taken out
                break
            batch.append(nxt)
        return batch

    def end_stream(self, stream: str) -> None:
        """Forget a finished stream's context window and the predictor's running audio statistics."""
        if self._windows is not None:
            self._windows.reset(stream)
        if self._stream_keys:
            self._predictor.reset_stream(stream)  # type: ignore[attr-defined]

    def _plan(self, batch: list[Transcribed], rows: list[tuple[str | None, np.ndarray | None]],
              ready: list[int]) -> tuple[list[ContextRow], Plan] | None:  # fmt: skip
        """The batch's past-context plan (speaker tags, past items, their ids), or None without windows."""
        if self._windows is None:
            return None
        crows = []
        for i in ready:
            utt = batch[i].utterance
            speaker = getattr(utt, "speaker", None) or getattr(batch[i], "speaker", None)
            crows.append(ContextRow(utt.stream, utt.utterance_id, utt.start_s, utt.end_s,
                                    str(speaker) if speaker else None, rows[i][0] is not None,
                                    rows[i][0] or ""))  # fmt: skip
        return crows, self._windows.plan(crows)

    def _remember(self, planned: tuple[list[ContextRow], Plan] | None, k: int, pred: PredictionLike) -> None:
        """Cache row ``k``'s text encoding for the lines after it."""
        if planned is not None and self._windows is not None:
            crows, plan = planned
            self._windows.record(crows[k], plan.tags[k], getattr(pred, "text_embedding", None))

    async def _classify(self, batch: list[Transcribed]) -> list[Classified]:
        rows = [self._row(item) for item in batch]
        failed: dict[int, str] = {}
        if self._feature_predictor is not None:
            rows, failed = await self._with_features(batch, rows)
        ready = [i for i, (t, a) in enumerate(rows) if t is not None or a is not None]
        results: list[Classified | None] = [None] * len(batch)
        for i, _ in enumerate(batch):
            if i in failed and i not in ready:
                results[i] = Classified(batch[i], None, failed[i])
            elif i not in ready:
                self.unclassifiable += 1
                results[i] = Classified(
                    batch[i], None, "no usable modality (empty transcript, no audio branch)", unclassifiable=True
                )
        if ready:
            texts = [rows[i][0] for i in ready]
            audio = [rows[i][1] for i in ready]
            planned = self._plan(batch, rows, ready)
            tags = planned[1].tags if planned is not None else None
            past = planned[1].past if planned is not None and self.reads_context else None
            ids = planned[1].ids if planned is not None and self.reads_context else None
            lines = planned[1].lines if planned is not None and self._past_lines else None
            if lines is not None and ids is None and planned is not None:  # the event names the lines read
                ids = [self._latest_lines(row_ids) for row_ids in planned[1].ids]
            keys = [(batch[i].utterance.stream, batch[i].speaker) for i in ready]
            t0 = self._clock()
            try:
                preds = await self._predict(texts, audio, tags, past, keys, lines)
                for k, (i, pred) in enumerate(zip(ready, preds, strict=True)):
                    results[i] = Classified(batch[i], pred, None, len(ready),
                                            context_ids=ids[k] if ids is not None else None)  # fmt: skip
                    self._remember(planned, k, pred)
            except Exception as exc:
                if len(ready) == 1:
                    logger.exception("classifying %s failed", batch[ready[0]].utterance.utterance_id)
                    results[ready[0]] = Classified(batch[ready[0]], None, _failure(exc))
                else:
                    # One bad row must not cost its batch-mates their emotion: retry the rows one by one
                    # (each reads only the cached past, not its batch-mates).
                    logger.warning("a batch of %d failed (%s); classifying its rows one by one", len(ready), exc)
                    for k, i in enumerate(ready):
                        row_past, row_ids, row_lines = self._cached_only(planned, k, past, lines)
                        try:
                            (pred,) = await self._predict([rows[i][0]], [rows[i][1]],
                                                          None if tags is None else [tags[k]], row_past,
                                                          [keys[k]], row_lines)  # fmt: skip
                            results[i] = Classified(batch[i], pred, None, 1, context_ids=row_ids)
                            self._remember(planned, k, pred)
                        except Exception as row_exc:
                            logger.exception("classifying %s failed", batch[i].utterance.utterance_id)
                            results[i] = Classified(batch[i], None, _failure(row_exc))
            self.busy_s += self._clock() - t0
            self.batches += 1
            self.items += len(ready)
            self.audio_s += sum(batch[i].utterance.duration_s for i in ready)
        return [r for r in results if r is not None]

    def _cached_only(
        self,
        planned: tuple[list[ContextRow], Plan] | None,
        k: int,
        past: list[list[tuple[np.ndarray | int, int]]] | None,
        lines: list[list[tuple[str | None, str]]] | None,
    ) -> tuple[
        list[list[tuple[np.ndarray | int, int]]] | None,
        tuple[str, ...] | None,
        list[list[tuple[str | None, str]]] | None,
    ]:
        """Row ``k``'s context without its batch-mates (classified alone after its batch failed): its past
        items, the ids of what it reads, and its past lines, from the cache only."""
        if planned is None or (past is None and lines is None):
            return None, None, None
        plan = planned[1]
        cached = [m for m, (item, _) in enumerate(plan.past[k]) if not isinstance(item, int)]
        row_past = [[plan.past[k][m] for m in cached]] if past is not None else None
        row_lines = [[plan.lines[k][m] for m in cached]] if lines is not None else None
        ids = tuple(plan.ids[k][m] for m in cached)
        return row_past, ids if past is not None else self._latest_lines(ids), row_lines

    def _latest_lines(self, ids: tuple[str, ...]) -> tuple[str, ...]:
        """The ids of the past lines a checkpoint without a context module reads: its latest ``past_lines``."""
        return ids[-self._past_lines :]

    async def classify_text(self, text: str) -> PredictionLike:
        """One sentence through the text branch alone (``POST /api/classify``), in the stage's own
        worker thread: the model is never run by two threads at once, and the loop never waits on it."""
        if not self._predictor.uses_text:
            raise ValueError("the classifier checkpoint has no text branch")
        loop = asyncio.get_running_loop()
        (pred,) = await loop.run_in_executor(self._executor, self._predictor.predict, [text], [None])
        return pred

    async def _predict(
        self,
        texts: list[str | None],
        audio: list[np.ndarray | None],
        tags: list[str | None] | None = None,
        past: list[list[tuple[np.ndarray | int, int]]] | None = None,
        keys: list[tuple[str, str | None]] | None = None,
        lines: list[list[tuple[str | None, str]]] | None = None,
    ) -> Sequence[PredictionLike]:
        """``audio`` holds feature vectors when the predictor takes them (see :meth:`_with_features`);
        ``tags``/``past``: speaker tags and past windows, for predictors that read them; ``keys``: each
        row's (stream, speaker label) for the audio branch's running statistics."""
        loop = asyncio.get_running_loop()
        fp = self._feature_predictor
        fn = fp.predict_features if fp is not None else self._predictor.predict
        kwargs: dict[str, Any] = {}
        if tags is not None and self._speaker_tags:
            kwargs["speakers"] = tags
        if past is not None:
            kwargs["past"] = past
        if lines is not None:
            kwargs["past_lines"] = lines
        if fp is not None and self._stream_keys and keys is not None:
            kwargs["streams"] = [k[0] for k in keys]  # running audio statistics per stream ...
            if self._speaker_keys:
                kwargs["audio_speakers"] = [k[1] for k in keys]  # ... and per speaker in it
        preds: Sequence[Any] = await loop.run_in_executor(self._executor, functools.partial(fn, **kwargs), texts, audio)
        if len(preds) != len(texts):
            raise RuntimeError(f"predict returned {len(preds)} results for {len(texts)} inputs")
        return preds


def _failure(exc: BaseException) -> str:
    return f"classification failed: {type(exc).__name__}: {exc}"
