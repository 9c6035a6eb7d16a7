"""Spectral and voice-quality statistics of an utterance: what the Whisper encoder's pooled frames miss.

The audio branch's main input is Whisper's last encoder layer, mean+std pooled; a model trained to
transcribe keeps what words need and drops much of *how* they are said. This module adds, from the
waveform of the utterance's speech span, the kind of measures the acoustic emotion literature relies on
(after eGeMAPS): spectral envelope and its movement, spectral balance, voicing and voice quality.
Computed over the span's active frames (within 35 dB of the loudest), 25 ms Hann windows, 10 ms hop:

* MFCCs 1-19 of a 40-band HTK mel spectrum (50 Hz - 8 kHz): mean, standard deviation, and the standard
  deviation of their deltas (57 values; c0, the level, is left out);
* spectral centroid (log), 85 % roll-off (log), flatness (log), alpha ratio (50-1000 Hz over
  1-5 kHz, dB), Hammarberg index (strongest bin under 2 kHz over 2-5 kHz, dB): mean and standard
  deviation of each (10 values);
* the voiced share of the active frames, jitter (median absolute change of F0 between voiced frames,
  semitones) and shimmer (the same of frame energy, dB) (3 values).

:data:`ACOUSTIC_DIM` values, finite for any input (silence included). Pure numpy, about 7 ms of CPU per
second of audio here besides the pitch track (which the prosody values share); nothing depends on the
absolute level except through ratios, so the speaker offset and the standardisation of the audio branch
handle gain and microphone.
"""

from __future__ import annotations

import numpy as np

from training.audio import SAMPLE_RATE_HZ
from training.features import mel_filterbank
from training.prosody import pitch_track

__all__ = ["ACOUSTIC_DIM", "acoustic_features"]

ACOUSTIC_DIM = 70

_WIN, _HOP, _BANDS, _CEPS = 400, 160, 40, 20
_FILTERS = mel_filterbank(_WIN // 2 + 1, _BANDS, SAMPLE_RATE_HZ, 50.0, 8000.0).T  # (bands, bins)
_DCT = np.cos(np.pi / _BANDS * (np.arange(_BANDS)[None, :] + 0.5) * np.arange(1, _CEPS)[:, None])  # c1..c19
_FREQS = np.fft.rfftfreq(_WIN, 1.0 / SAMPLE_RATE_HZ)
_WINDOW = np.hanning(_WIN)


def _power_frames(audio: np.ndarray) -> np.ndarray:
    if audio.size < _WIN + _HOP:
        audio = np.pad(audio, (0, _WIN + _HOP - audio.size))
    frames = np.lib.stride_tricks.sliding_window_view(audio, _WIN)[::_HOP]
    frames = (frames - frames.mean(axis=1, keepdims=True)) * _WINDOW
    return np.abs(np.fft.rfft(frames, axis=1)) ** 2 + 1e-12


def _deltas(x: np.ndarray) -> np.ndarray:
    """Regression deltas over +-2 frames (edges repeated)."""
    if len(x) < 2:
        return np.zeros_like(x)
    p = np.pad(x, ((2, 2), (0, 0)), mode="edge")
    deltas: np.ndarray = (-2.0 * p[:-4] - p[1:-3] + p[3:-1] + 2.0 * p[4:]) / 10.0
    return deltas


def _band(power: np.ndarray, lo: float, hi: float) -> np.ndarray:
    hz = _FREQS
    return power[:, (hz >= lo) & (hz < hi)]


def acoustic_features(audio: np.ndarray, *, f0: np.ndarray | None = None) -> np.ndarray:
    """:data:`ACOUSTIC_DIM` float32 statistics of 16 kHz mono ``audio`` (see the module docstring).

    ``f0``: :func:`training.prosody.pitch_track` of ``audio`` when the caller already has it."""
    audio = np.asarray(audio, dtype=np.float64).reshape(-1)
    power = _power_frames(audio)
    frame_db = 10.0 * np.log10(power.sum(axis=1))
    active = frame_db > frame_db.max() - 35.0
    if active.sum() < 3:
        active[:] = True
    p = power[active]
    mfcc = np.log(p @ _FILTERS.T + 1e-10) @ _DCT.T
    total = p.sum(axis=1)
    rolloff = _FREQS[np.argmax(np.cumsum(p, axis=1) >= 0.85 * total[:, None], axis=1)]
    spectral = np.stack([
        np.log((p * _FREQS).sum(axis=1) / total),
        np.log(rolloff + 50.0),
        np.log(np.exp(np.log(p).mean(axis=1)) / p.mean(axis=1)),
        10.0 * np.log10(_band(p, 50, 1000).sum(axis=1) / _band(p, 1000, 5000).sum(axis=1)),
        10.0 * np.log10(_band(p, 0, 2000).max(axis=1) / _band(p, 2000, 5000).max(axis=1)),
    ], axis=1)  # fmt: skip

    f0 = pitch_track(audio.astype(np.float32)) if f0 is None else np.asarray(f0)
    n = min(f0.size, active.size)
    f0, on, db = f0[:n], active[:n], frame_db[:n]
    voiced_share = float((f0[on] > 0).mean()) if on.any() else 0.0
    jitter = shimmer = 0.0
    pairs = (f0[1:] > 0) & (f0[:-1] > 0) & on[1:]
    if pairs.sum() >= 3:
        semis = 12.0 * np.log2(np.maximum(f0, 1.0) / 100.0)
        jitter = float(np.median(np.abs(np.diff(semis))[pairs]))
        shimmer = float(np.median(np.abs(np.diff(db))[pairs]))
    out = np.concatenate([
        mfcc.mean(axis=0), mfcc.std(axis=0), _deltas(mfcc).std(axis=0),
        spectral.mean(axis=0), spectral.std(axis=0), [voiced_share, jitter, shimmer],
    ])  # fmt: skip
    result: np.ndarray = np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
    return result
