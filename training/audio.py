"""Audio decoding with PyAV to float32 mono at a fixed rate.

``load_audio`` decodes a whole (short) file; ``iter_audio_chunks`` streams a file of any length in
fixed-size chunks with flat memory, so the stream's replay source and the trainer share one decoder.
Any container PyAV/FFmpeg reads works (wav, flac, mp3, mp4, mkv...); video tracks are ignored and
any sample rate, channel layout or sample format is resampled.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

__all__ = ["SAMPLE_RATE_HZ", "AudioDecodeError", "iter_audio_chunks", "load_audio"]

logger = logging.getLogger(__name__)

# The one sample rate of the project: Whisper, the VAD, the features and the stream all take 16 kHz.
SAMPLE_RATE_HZ = 16000


class AudioDecodeError(ValueError):
    """A file is missing, empty, corrupt or has no audio stream."""


def _open(path: Path) -> av.container.InputContainer:
    if not path.exists():
        raise AudioDecodeError(f"audio file not found: {path}")
    if path.is_file() and path.stat().st_size == 0:
        raise AudioDecodeError(f"audio file is empty: {path}")
    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise AudioDecodeError(f"cannot open {path} as audio: {exc}") from exc
    if not container.streams.audio:
        container.close()
        raise AudioDecodeError(f"{path} has no audio stream")
    return container


def _iter_resampled(path: Path, sample_rate_hz: int) -> Iterator[np.ndarray]:
    """Yield float32 mono blocks of whatever size the decoder produces."""
    container = _open(path)
    try:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate_hz)
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    yield out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
            for out in resampler.resample(None):  # flush the resampler's delay line
                yield out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
        except (av.error.FFmpegError, ValueError) as exc:
            raise AudioDecodeError(f"cannot decode audio of {path}: {exc}") from exc
    finally:
        container.close()


def iter_audio_chunks(
    path: str | Path, *, chunk_samples: int, sample_rate_hz: int = SAMPLE_RATE_HZ
) -> Iterator[np.ndarray]:
    """Stream ``path`` as float32 mono chunks of exactly ``chunk_samples`` (the last may be shorter).

    Memory stays flat whatever the file's length. Raises :class:`AudioDecodeError` naming the file
    when it cannot be opened or decoded, or when it holds no audio samples at all.
    """
    if chunk_samples <= 0:
        raise ValueError(f"chunk_samples must be positive, got {chunk_samples}")
    if sample_rate_hz <= 0:
        raise ValueError(f"sample_rate_hz must be positive, got {sample_rate_hz}")
    path = Path(path)
    pending: list[np.ndarray] = []
    pending_len = 0
    total = 0
    for block in _iter_resampled(path, sample_rate_hz):
        if block.size == 0:
            continue
        pending.append(block)
        pending_len += block.size
        while pending_len >= chunk_samples:
            joined = np.concatenate(pending) if len(pending) > 1 else pending[0]
            chunk, rest = joined[:chunk_samples], joined[chunk_samples:]
            total += chunk.size
            yield np.clip(chunk, -1.0, 1.0).astype(np.float32, copy=False)
            pending = [rest] if rest.size else []
            pending_len = rest.size
    if pending_len:
        total += pending_len
        yield np.clip(np.concatenate(pending), -1.0, 1.0).astype(np.float32, copy=False)
    if total == 0:
        raise AudioDecodeError(f"{path} decoded to no audio samples")


def load_audio(path: str | Path, *, sample_rate_hz: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """Decode all of ``path`` to a float32 mono array in [-1, 1] at ``sample_rate_hz``.

    Raises :class:`AudioDecodeError` (a ``ValueError``) naming the file for a missing, empty or
    corrupt file, or one without an audio stream.
    """
    path = Path(path)
    blocks = [b for b in _iter_resampled(path, sample_rate_hz) if b.size]
    if not blocks:
        raise AudioDecodeError(f"{path} decoded to no audio samples")
    audio: np.ndarray = np.clip(np.concatenate(blocks), -1.0, 1.0).astype(np.float32, copy=False)
    return audio
