"""The classifier stage: transcribed utterances in, emotion decisions out, micro-batched across streams.

Utterances that are ready at about the same time (within ``batch_wait_ms``, at most ``max_batch``)
are classified in one ``predict`` call in a worker thread. Each row gets the modalities it has and
the checkpoint uses: no text when Whisper's text was empty or dropped, no audio when the checkpoint
has no audio branch (so its features are never computed). A row with neither is not classified.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from stream.transcriber import Transcribed

__all__ = ["ClassifierStage", "Classified", "Predictor", "load_predictor"]

logger = logging.getLogger(__name__)


class PredictionLike(Protocol):
    @property
    def label(self) -> str: ...
    @property
    def scores(self) -> dict[str, float]: ...
    @property
    def modalities(self) -> tuple[str, ...]: ...


class Predictor(Protocol):
    """What ``training.inference.EmotionPredictor`` offers the stage."""

    labels: tuple[str, ...]
    uses_audio: bool
    uses_text: bool
    model_ids: dict[str, str]

    def predict(
        self, texts: Sequence[str | None], audio: Sequence[np.ndarray | None]
    ) -> Sequence[PredictionLike]: ...


@dataclass(frozen=True, slots=True)
class Classified:
    """The decision for one utterance; ``prediction`` is None when ``error`` says why."""

    item: Transcribed
    prediction: PredictionLike | None
    error: str | None = None
    batch_size: int = 1


def load_predictor(path: str, *, device: str = "auto") -> Predictor:
    """``EmotionPredictor.from_checkpoint`` with an error naming the file and the fix when it is missing."""
    from pathlib import Path

    if not Path(path).is_file():
        raise FileNotFoundError(
            f"classifier checkpoint {path} does not exist; train one with `emostream-train` or pass "
            "--checkpoint PATH"
        )
    from training.inference import EmotionPredictor

    predictor: Predictor = EmotionPredictor.from_checkpoint(path, device=device)
    return predictor


class ClassifierStage:
    """``Transcribed`` in, ``Classified`` out; see the module docstring for batching and modalities."""

    def __init__(
        self,
        predictor: Predictor,
        *,
        max_batch: int = 16,
        batch_wait_ms: int = 5,
        queue_items: int = 64,
        executor: Executor | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._predictor = predictor
        self._max_batch = max_batch
        self._wait_s = batch_wait_ms / 1000
        self._queue_items = max(queue_items, max_batch)
        self._executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="classifier")
        self._clock = clock
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
        return self.busy_s / self.audio_s if self.audio_s else 0.0

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

        task = asyncio.create_task(pump())
        try:
            done = False
            while not done:
                first = await queue.get()
                if first is None:
                    break
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
                        done = True
                        break
                    batch.append(nxt)
                for out in await self._classify(batch):
                    yield out
            await task  # re-raise a failure of the input
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _classify(self, batch: list[Transcribed]) -> list[Classified]:
        rows = [self._row(item) for item in batch]
        ready = [i for i, (t, a) in enumerate(rows) if t is not None or a is not None]
        results: list[Classified | None] = [None] * len(batch)
        for i, _ in enumerate(batch):
            if i not in ready:
                self.unclassifiable += 1
                results[i] = Classified(batch[i], None, "no usable modality (empty transcript, no audio branch)")
        if ready:
            texts = [rows[i][0] for i in ready]
            audio = [rows[i][1] for i in ready]
            t0 = self._clock()
            try:
                preds = await self._predict(texts, audio)
                for i, pred in zip(ready, preds, strict=True):
                    results[i] = Classified(batch[i], pred, None, len(ready))
            except Exception as exc:
                if len(ready) == 1:
                    logger.exception("classifying %s failed", batch[ready[0]].utterance.utterance_id)
                    results[ready[0]] = Classified(batch[ready[0]], None, _failure(exc))
                else:
                    # One bad row must not cost its batch-mates their emotion: retry the rows one by one.
                    logger.warning("a batch of %d failed (%s); classifying its rows one by one", len(ready), exc)
                    for i in ready:
                        try:
                            (pred,) = await self._predict([rows[i][0]], [rows[i][1]])
                            results[i] = Classified(batch[i], pred, None, 1)
                        except Exception as row_exc:
                            logger.exception("classifying %s failed", batch[i].utterance.utterance_id)
                            results[i] = Classified(batch[i], None, _failure(row_exc))
            self.busy_s += self._clock() - t0
            self.batches += 1
            self.items += len(ready)
            self.audio_s += sum(batch[i].utterance.audio.size for i in ready) / 16000
        return [r for r in results if r is not None]

    async def _predict(self, texts: list[str | None], audio: list[np.ndarray | None]) -> Sequence[PredictionLike]:
        loop = asyncio.get_running_loop()
        preds: Sequence[Any] = await loop.run_in_executor(self._executor, self._predictor.predict, texts, audio)
        if len(preds) != len(texts):
            raise RuntimeError(f"predict returned {len(preds)} results for {len(texts)} inputs")
        return preds


def _failure(exc: BaseException) -> str:
    return f"classification failed: {type(exc).__name__}: {exc}"
