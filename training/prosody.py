"""Cheap signal measures of an utterance: prosody (energy, pitch, rate) and silence trimming.

Pure numpy, shared by the feature extractor (training and serving) through :mod:`training.features`.
"""

from __future__ import annotations

import math

import numpy as np

from training.audio import SAMPLE_RATE_HZ

__all__ = ["PROSODY_DIM", "pitch_track", "prosody_features", "trim_silence"]

PROSODY_DIM = 10


def _frame_signal(audio: np.ndarray, frame: int, hop: int) -> np.ndarray:
    if audio.size < frame:
        audio = np.pad(audio, (0, frame - audio.size))
    n = 1 + (audio.size - frame) // hop
    return np.lib.stride_tricks.as_strided(audio, (n, frame), (audio.strides[0] * hop, audio.strides[0]))


def pitch_track(
    audio: np.ndarray, sample_rate_hz: int = SAMPLE_RATE_HZ, *, low_hz: float = 60.0, high_hz: float = 500.0
) -> np.ndarray:
    """F0 in Hz per 10 ms frame (0 = unvoiced) from the normalised autocorrelation of 40 ms frames.

    A frame is voiced when its autocorrelation peak in the pitch range exceeds 0.5; the first lag
    within 90 % of the best peak is taken, which avoids most octave-down errors.
    """
    frame, hop = int(0.040 * sample_rate_hz), int(0.010 * sample_rate_hz)
    if audio.size < frame:
        return np.zeros(0, dtype=np.float32)
    frames = _frame_signal(np.ascontiguousarray(audio, dtype=np.float32), frame, hop).astype(np.float64)
    frames = (frames - frames.mean(axis=1, keepdims=True)) * np.hanning(frame)
    nfft = 1 << (2 * frame - 1).bit_length()
    spec = np.fft.rfft(frames, nfft, axis=1)
    ac = np.fft.irfft(np.abs(spec) ** 2, nfft, axis=1)[:, :frame]
    # Undo the window's own autocorrelation so that peaks at long lags are not penalised.
    win_ac = np.fft.irfft(np.abs(np.fft.rfft(np.hanning(frame), nfft)) ** 2, nfft)[:frame]
    norm = ac / np.maximum(ac[:, :1], 1e-12) / np.maximum(win_ac / win_ac[0], 1e-3)
    lo, hi = int(sample_rate_hz / high_hz), min(int(sample_rate_hz / low_hz), frame - 1)
    band = norm[:, lo : hi + 1]
    best = band.max(axis=1)
    first = np.argmax(band >= 0.9 * best[:, None], axis=1)
    # walk to the local maximum following the first qualifying lag
    lags = first.copy()
    for i in range(band.shape[0]):
        j = lags[i]
        while j + 1 < band.shape[1] and band[i, j + 1] > band[i, j]:
            j += 1
        lags[i] = j
    f0 = sample_rate_hz / (lags + lo).astype(np.float64)
    return np.where(best > 0.5, f0, 0.0).astype(np.float32)


def prosody_features(
    audio: np.ndarray, sample_rate_hz: int = SAMPLE_RATE_HZ, *, f0: np.ndarray | None = None
) -> np.ndarray:
    """Cheap prosody: :data:`PROSODY_DIM` float32 values, finite for any input (silence included).

    ``f0``: :func:`pitch_track` of ``audio`` when the caller already has it (it is most of the cost)."""
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    duration_s = max(audio.size / sample_rate_hz, 1e-3)
    frames = _frame_signal(audio, int(0.025 * sample_rate_hz), int(0.010 * sample_rate_hz))
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    energy_db = 20.0 * np.log10(rms + 1e-8)
    active = energy_db > max(energy_db.max() - 35.0, -70.0)
    active_db = energy_db[active] if active.any() else energy_db
    zcr = np.mean(np.abs(np.diff(np.signbit(frames), axis=1)), axis=1)

    # Speaking rate: peaks of the smoothed energy envelope (syllable nuclei), >= 100 ms apart.
    env = np.convolve(energy_db, np.ones(5) / 5.0, mode="same")
    thresh = np.median(active_db)
    peaks = 0
    last = -100
    for i in range(1, env.size - 1):
        if env[i] > thresh and env[i] >= env[i - 1] and env[i] > env[i + 1] and i - last >= 10:
            peaks += 1
            last = i
    active_s = max(float(active.sum()) * 0.010, 0.05)

    pitch_mean = pitch_std = pitch_range = 0.0
    f0 = pitch_track(audio, sample_rate_hz) if f0 is None else f0
    n = min(f0.size, active.size)
    voiced = f0[:n][active[:n] & (f0[:n] > 0)]
    if voiced.size >= 3:
        semis = 12.0 * np.log2(voiced / 100.0)
        pitch_mean = float(np.median(semis))
        pitch_std = float(np.std(semis))
        pitch_range = float(np.percentile(semis, 90) - np.percentile(semis, 10))
    out = np.array(
        [
            math.log(duration_s),
            float(np.mean(active_db)),
            float(np.std(active_db)),
            float(np.percentile(energy_db, 95) - np.percentile(energy_db, 5)),
            float(active.mean()),
            pitch_mean,
            pitch_std,
            pitch_range,
            peaks / active_s,
            float(np.mean(zcr)),
        ],
        dtype=np.float32,
    )
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def trim_silence(
    audio: np.ndarray, *, below_peak_db: float = 35.0, floor_db: float = -55.0, margin_s: float = 0.1
) -> np.ndarray:
    """``audio`` without leading/trailing frames quieter than ``below_peak_db`` under its loudest frame.

    Pooled encoder states then describe the speech, not the pauses around it (RAVDESS clips start
    with ~1 s of silence; VAD segments carry pre/post roll). Silence-only audio is returned unchanged.
    """
    hop = int(0.010 * SAMPLE_RATE_HZ)
    frames = _frame_signal(np.ascontiguousarray(audio, dtype=np.float32), int(0.025 * SAMPLE_RATE_HZ), hop)
    energy_db = 20.0 * np.log10(np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12) + 1e-8)
    active = np.flatnonzero(energy_db > max(energy_db.max() - below_peak_db, floor_db))
    if active.size == 0:
        return audio
    margin = int(margin_s * SAMPLE_RATE_HZ)
    start = max(0, int(active[0]) * hop - margin)
    end = min(audio.size, (int(active[-1]) * hop + int(0.025 * SAMPLE_RATE_HZ)) + margin)
    return audio[start:end] if end - start >= int(0.1 * SAMPLE_RATE_HZ) else audio
