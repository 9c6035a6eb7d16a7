"""Frame classifiers: is this frame of 16 kHz int16 audio speech?

* :class:`WebRtcVad` wraps webrtcvad (10/20/30 ms frames, aggressiveness 0-3); cheap and stateless.
* :class:`SileroVad` runs the Silero model that faster-whisper ships (``faster_whisper/assets``,
  offline) one 512-sample window at a time, carrying its recurrent state and context between calls
  so the result matches running it over the whole recording.

Both are blocking but fast; the segmenting stage calls them from its worker thread.
"""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np

from stream.config import VADConfig
from stream.records import SAMPLE_RATE_HZ

__all__ = ["FrameClassifier", "SileroVad", "WebRtcVad", "make_vad"]

logger = logging.getLogger(__name__)


class FrameClassifier(Protocol):
    """Decides speech/non-speech for consecutive frames of exactly ``frame_samples`` int16 samples."""

    frame_samples: int

    def is_speech(self, frame: np.ndarray) -> bool: ...

    def reset(self) -> None:
        """Forget any state (a gap in the audio or a new stream)."""


class WebRtcVad:
    """webrtcvad over 10, 20 or 30 ms frames at 16 kHz."""

    def __init__(self, *, frame_ms: int = 30, aggressiveness: int = 2, sample_rate_hz: int = SAMPLE_RATE_HZ) -> None:
        import webrtcvad

        if frame_ms not in (10, 20, 30):
            raise ValueError(f"webrtcvad frames must be 10, 20 or 30 ms, got {frame_ms}")
        if not 0 <= aggressiveness <= 3:
            raise ValueError(f"webrtcvad aggressiveness must be 0-3, got {aggressiveness}")
        self._vad = webrtcvad.Vad(aggressiveness)
        self._rate = sample_rate_hz
        self.frame_samples = sample_rate_hz * frame_ms // 1000

    def is_speech(self, frame: np.ndarray) -> bool:
        if frame.size != self.frame_samples:
            raise ValueError(f"expected a frame of {self.frame_samples} samples, got {frame.size}")
        if not frame.any():
            # Digital silence is never speech -- and feeding it to webrtcvad for long (minutes of zeros
            # between sentences of a replayed file) drifts its adaptive models until it calls silence speech.
            return False
        return bool(self._vad.is_speech(np.ascontiguousarray(frame, dtype=np.int16).tobytes(), self._rate))

    def reset(self) -> None:
        """webrtcvad keeps no state worth resetting between frames."""


class SileroVad:
    """Silero VAD v6 from faster-whisper's package data, streamed window by window."""

    WINDOW = 512  # samples at 16 kHz (32 ms), fixed by the model
    CONTEXT = 64

    def __init__(self, *, threshold: float = 0.5, sample_rate_hz: int = SAMPLE_RATE_HZ) -> None:
        if sample_rate_hz != SAMPLE_RATE_HZ:
            raise ValueError("Silero VAD runs at 16 kHz only")
        from faster_whisper.vad import get_vad_model

        self._session = get_vad_model().session
        self.threshold = threshold
        self.frame_samples = self.WINDOW
        self.reset()

    def reset(self) -> None:
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros((1, self.CONTEXT), dtype=np.float32)

    def probability(self, frame: np.ndarray) -> float:
        """Speech probability of one 512-sample window (state carries over to the next call)."""
        if frame.size != self.WINDOW:
            raise ValueError(f"expected a frame of {self.WINDOW} samples, got {frame.size}")
        x = (frame.astype(np.float32) / 32768.0).reshape(1, -1)
        batch = np.concatenate([self._context, x], axis=1)
        out, self._h, self._c = self._session.run(None, {"input": batch, "h": self._h, "c": self._c})
        self._context = x[:, -self.CONTEXT :]
        return float(np.asarray(out).reshape(-1)[0])

    def is_speech(self, frame: np.ndarray) -> bool:
        return self.probability(frame) >= self.threshold


def make_vad(cfg: VADConfig, *, sample_rate_hz: int = SAMPLE_RATE_HZ) -> FrameClassifier:
    """The frame classifier ``vad.engine`` names (a new one per stream: Silero keeps state)."""
    if cfg.engine == "silero":
        return SileroVad(threshold=cfg.silero_threshold, sample_rate_hz=sample_rate_hz)
    return WebRtcVad(frame_ms=cfg.frame_ms, aggressiveness=cfg.aggressiveness, sample_rate_hz=sample_rate_hz)
