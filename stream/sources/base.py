"""What the pipeline needs from a source, and the sample conversion every source uses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

import numpy as np

from stream.records import SourceItem

__all__ = ["Clock", "Sleep", "Source", "to_int16"]

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class Source(Protocol):
    """What the pipeline needs from a source."""

    stream_id: str
    kind: str  # "file" | "mic"
    name: str  # the path or the device, for ``hello``
    speed: float | None  # audio seconds per wall second (1.0 live); None = as fast as possible

    def __aiter__(self) -> AsyncIterator[SourceItem]: ...

    def stats(self) -> dict[str, float]: ...


def to_int16(audio: np.ndarray) -> np.ndarray:
    """float32 [-1, 1] -> int16, rounding and clipping."""
    pcm: np.ndarray = np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)
    return pcm
