"""Drive a stage the way the pipeline does: records in through an async iterator, its output collected."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, TypeVar

import numpy as np

from stream.records import AudioChunk, SourceItem
from stream.sources import to_int16

__all__ = ["audio_chunks", "feed", "run_stage"]

A = TypeVar("A")


async def feed(items: Iterable[A], *, gap_s: float = 0.0) -> AsyncIterator[A]:
    """``items`` as an async iterator, ``gap_s`` apart (0: all at once, as a queue already holding them)."""
    for item in items:
        if gap_s:
            await asyncio.sleep(gap_s)
        yield item


async def audio_chunks(audio: np.ndarray, stream: str = "s", chunk: int = 1600) -> AsyncIterator[SourceItem]:
    """Float ``audio`` as one source's int16 chunks of ``chunk`` samples, all at once (a segment stage's input)."""
    pcm = to_int16(audio)
    for start in range(0, pcm.size, chunk):
        yield AudioChunk(stream, start, pcm[start : start + chunk], 0.0)


async def run_stage(run: Callable[[AsyncIterator[Any]], AsyncIterator[Any]], inputs: Iterable[Any], *,
                    gap_s: float = 0.0) -> list[Any]:  # fmt: skip
    """Feed ``inputs`` to a stage's ``run`` and return everything it yields, in order.

    ::

        out = await run_stage(ClassifierStage(predictor).run, [transcribed_a, transcribed_b])
    """
    return [out async for out in run(feed(inputs, gap_s=gap_s))]
