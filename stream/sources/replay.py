"""Replay of a media file (any container PyAV reads), paced like live audio or as fast as the pipeline goes.

File replay is never lossy: when the pipeline falls behind it simply reads the file later (back-pressure).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

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
        chunks = iter_audio_chunks(self.path, chunk_samples=self._chunk, sample_rate_hz=self._rate)
        start = self._clock()
        try:
            while True:
                try:
                    block = await loop.run_in_executor(None, next, chunks, None)
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
            close = getattr(chunks, "close", None)
            if close is not None:  # stop the decoder and close the file now, not at garbage collection
                try:
                    close()
                except ValueError:  # cancelled while a worker thread decodes: closed when collected
                    logger.debug("%s: decoder still busy at stop; it closes when collected", self.stream_id)
