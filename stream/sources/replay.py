"""Replay of a media file (any container PyAV reads), paced like live audio or as fast as the pipeline goes.

File replay is never lossy: when the pipeline falls behind it simply reads the file later (back-pressure).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np

from stream.records import SAMPLE_RATE_HZ, AudioChunk, SourceItem, SourceProblem
from stream.sources.base import Clock, Sleep, to_int16
from training.audio import AudioDecodeError, iter_audio_chunks

__all__ = ["ReplaySource"]

logger = logging.getLogger(__name__)


class ReplaySource:
    """A media file decoded by ``training.audio.iter_audio_chunks`` in a worker thread.

    Paced at ``speed`` times real time (chunk *n* is released when its last sample is due), or as
    fast as the consumer takes it with ``fast=True``.
    """

    kind = "file"

    def __init__(
        self,
        stream_id: str,
        path: str | Path,
        *,
        chunk_ms: int = 100,
        speed: float = 1.0,
        fast: bool = False,
        sample_rate_hz: int = SAMPLE_RATE_HZ,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if speed <= 0:
            raise ValueError(f"replay speed must be > 0, got {speed}")
        self.stream_id = stream_id
        self.path = Path(path)
        self.name = str(path)
        self.speed: float | None = None if fast else speed
        self._chunk = sample_rate_hz * chunk_ms // 1000
        self._rate = sample_rate_hz
        self._clock = clock
        self._sleep = sleep
        self._samples = 0
        self._behind_s = 0.0

    def stats(self) -> dict[str, float]:
        return {"audio_s": self._samples / self._rate, "behind_s": round(self._behind_s, 3)}

    def __aiter__(self) -> AsyncIterator[SourceItem]:
        return self._run()

    async def _run(self) -> AsyncIterator[SourceItem]:
        loop = asyncio.get_running_loop()
        chunks = _ChunkReader(iter_audio_chunks(self.path, chunk_samples=self._chunk, sample_rate_hz=self._rate))
        start = self._clock()
        try:
            while True:
                try:
                    block = await loop.run_in_executor(None, chunks.read)
                except (AudioDecodeError, OSError) as exc:
                    yield SourceProblem(self.stream_id, "source_failed", f"cannot replay {self.path}: {exc}", True)
                    return
                if block is None:
                    return
                pcm = to_int16(block)
                if self.speed is not None:
                    due = start + (self._samples + pcm.size) / (self._rate * self.speed)
                    delay = due - self._clock()
                    if delay > 0:
                        await self._sleep(delay)
                    else:
                        self._behind_s = -delay  # the consumer is slower than the requested pace
                chunk = AudioChunk(self.stream_id, self._samples, pcm, self._clock())
                self._samples += pcm.size
                yield chunk
        finally:
            chunks.close(loop)  # stop the decoder and close the file now, not at garbage collection


class _ChunkReader:
    """``next()`` on the decoding generator from worker threads, and a ``close`` that never races it.

    A stop cancels the replay at any await, also while a worker thread is inside ``next()`` (more often
    on a loaded machine, where a decode takes longer). Closing the generator then raised "generator
    already executing" and ended the stream as failed (exit status 1 on SIGTERM). Here the close waits
    for that decode -- in the worker pool, so the event loop never blocks on it -- and the file is
    closed right after it, not whenever the generator is collected.
    """

    def __init__(self, chunks: Iterator[np.ndarray]) -> None:
        self._chunks = chunks
        self._lock = threading.Lock()
        self._closed = False

    def read(self) -> np.ndarray | None:
        with self._lock:
            return None if self._closed else next(self._chunks, None)

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._lock.acquire(blocking=False):
            try:
                self._close_locked()
            finally:
                self._lock.release()
            return
        try:  # a decode is in flight: close right after it
            loop.run_in_executor(None, self._close_after_read)
        except RuntimeError:  # the loop or its executor is shutting down: the generator's finaliser closes it
            logger.debug("replay decoder left to garbage collection (the executor is shut down)")

    def _close_after_read(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        self._closed = True
        close = getattr(self._chunks, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # closing a decoder must not turn a clean stop into a failure
                logger.warning("closing a replay decoder failed", exc_info=True)
