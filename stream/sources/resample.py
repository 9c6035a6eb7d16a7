"""Streaming resampling of int16 mono blocks to the pipeline's rate (the microphone, the page's ingest)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["Resampler"]


class Resampler:
    """Streaming int16 mono resampling (PyAV/FFmpeg's swresample), continuous across blocks.

    ``push(start, pcm)`` takes the block's start in input samples and returns its start in output
    samples; a jump in ``start`` (dropped audio) restarts the filter at the matching output position.
    """

    def __init__(self, rate_in: int, rate_out: int) -> None:
        self._in, self._out = rate_in, rate_out
        self._res: Any = None
        self._expected = -1
        self._pos = 0

    def push(self, start: int, pcm: np.ndarray) -> tuple[int, np.ndarray]:
        import av

        if self._res is None or start != self._expected:
            self._res = av.AudioResampler(format="s16", layout="mono", rate=self._out)
            self._pos = round(start * self._out / self._in)
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(pcm, dtype=np.int16).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = self._in
        parts = [f.to_ndarray().reshape(-1) for f in self._res.resample(frame)]
        out = np.concatenate(parts).astype(np.int16, copy=False) if parts else np.zeros(0, dtype=np.int16)
        begin = self._pos
        self._pos += out.size
        self._expected = start + pcm.size
        return begin, out
