"""Replay of a media file from a sample index: how a reclaimed job picks up where a dead worker stopped.

The audio before ``start_sample`` is decoded as fast as possible and dropped; what follows is paced
like :class:`stream.sources.ReplaySource` and keeps the file's own timeline (chunks start at their
true sample index), so the new worker's ``start_s``/``end_s`` match what the dead worker published.
``first_utterance`` tells the pipeline how many utterances are already done, so the numbering of
utterance ids continues (``ep1-8`` after ``ep1-7``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from stream.config import AudioConfig
from stream.sources import AudioChunk, ReplaySource, SourceItem

__all__ = ["ResumedReplay"]


class ResumedReplay:
    """A :class:`ReplaySource` that starts at ``start_sample`` (see the module docstring)."""

    kind = "file"

    def __init__(
        self,
        stream_id: str,
        path: str | Path,
        audio: AudioConfig,
        *,
        start_sample: int = 0,
        first_utterance: int = 0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``audio``: the ``[audio]`` section (chunk size, replay speed or ``replay_fast``)."""
        if start_sample < 0 or first_utterance < 0:
            raise ValueError(f"start_sample and first_utterance must be >= 0, got {start_sample}, {first_utterance}")
        # The inner source runs unpaced: the skipped part must not take real time.
        self._inner = ReplaySource(stream_id, path, chunk_ms=audio.replay_chunk_ms, fast=True,
                                   sample_rate_hz=audio.sample_rate_hz, clock=clock)  # fmt: skip
        self.stream_id = stream_id
        self.name = str(path)
        self.speed: float | None = None if audio.replay_fast else audio.replay_speed
        self.start_sample = start_sample
        self.first_utterance = first_utterance
        self._rate = audio.sample_rate_hz
        self._clock = clock
        self._sleep = sleep
        self._behind_s = 0.0

    def stats(self) -> dict[str, float]:
        inner = self._inner.stats()
        return {**inner, "start_s": self.start_sample / self._rate, "behind_s": round(self._behind_s, 3)}

    def __aiter__(self) -> AsyncIterator[SourceItem]:
        return self._run()

    async def _run(self) -> AsyncIterator[SourceItem]:
        started: float | None = None
        async for item in self._inner:
            if not isinstance(item, AudioChunk):
                yield item
                continue
            if item.end_sample <= self.start_sample:
                continue
            pcm, first = item.pcm, item.start_sample
            if first < self.start_sample:
                pcm, first = pcm[self.start_sample - first :], self.start_sample
            if started is None:
                started = self._clock()
            if self.speed is not None:
                due = started + (first + pcm.size - self.start_sample) / (self._rate * self.speed)
                delay = due - self._clock()
                if delay > 0:
                    await self._sleep(delay)
                else:
                    self._behind_s = -delay
            yield AudioChunk(self.stream_id, first, pcm, self._clock())
