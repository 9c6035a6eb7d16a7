"""Speaker change points inside one segment: where a turn with hardly any pause hands over to another voice.

Sans-I/O and pure: :func:`change_points` takes a finished segment's audio and returns the sample offsets
at which to cut it. The segmenter only ends an utterance after ``end_silence_ms`` of silence, so two
people whose turns are 50-400 ms apart come out as one utterance; this splits them before Whisper.

Candidates are the short pauses inside the segment: runs of at least ``min_gap_ms`` of 10 ms frames more
than :data:`QUIET_BELOW_PEAK_DB` under the segment's loudest. At each, the voiced frames of up to
:data:`CONTEXT_MS` either side (at least :data:`MIN_SIDE_MS` each) are compared:

* a BIC test on full-covariance Gaussians of MFCCs 1-19 (from the 40-band mel of
  :mod:`stream.stages.speaker_encoder`): the log-likelihood gained by two Gaussians instead of one,
  divided by the BIC penalty for the extra parameters (> 1: BIC prefers two voices);
* plus :data:`PITCH_WEIGHT` times the distance in semitones between the two sides' median pitch
  (autocorrelation F0; espeak-ng voices differ mostly in pitch and formants, which a GE2E encoder
  hardly hears).

A pause whose score reaches ``threshold``, and is the highest within :data:`SUPPRESS_MS`, is a change of
speaker. The score ranks real turn boundaries
above the pauses inside a line well but not perfectly (see README, "Who is speaking"): a sentence pause
of one voice can still score high, so the rule is a companion of the end-of-turn check, off by default.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stream.stages.speaker_encoder import mel_spectrogram

__all__ = ["ChangeParams", "change_points", "gap_scores", "score_at", "select"]

SAMPLE_RATE_HZ = 16000
HOP = 160  # 10 ms: the mel front-end's hop, and the pause and pitch frames
QUIET_BELOW_PEAK_DB = 30.0
CONTEXT_MS = 1500  # voiced audio compared on each side of a pause
MIN_SIDE_MS = 400  # less than this voiced on either side: no test (too little to tell voices apart)
MFCC_DIMS = 20  # coefficients 1..19 are used (0 is loudness)
PITCH_WEIGHT = 0.2  # score per semitone between the sides' median pitch
SUPPRESS_MS = 1000  # of two pauses closer than this, only the higher-scoring one may be a change
_F0_WINDOW = 640  # 40 ms
_F0_MIN_HZ, _F0_MAX_HZ = 70.0, 400.0
_F0_VOICED = 0.5  # normalised autocorrelation peak above which a frame has a pitch


@dataclass(frozen=True, slots=True)
class ChangeParams:
    """``threshold``: the score (BIC ratio + pitch term) at which a pause is a change of speaker."""

    threshold: float
    min_gap_ms: int = 50

    def __post_init__(self) -> None:
        if self.threshold <= 0:
            raise ValueError(f"threshold must be > 0, got {self.threshold}")
        if self.min_gap_ms < 10:
            raise ValueError(f"min_gap_ms must be >= 10, got {self.min_gap_ms}")


def _mfcc(audio: np.ndarray) -> np.ndarray:
    logmel = np.log(mel_spectrogram(audio).astype(np.float64) + 1e-8)
    bands = logmel.shape[1]
    basis = np.cos(np.pi / bands * (np.arange(bands)[None, :] + 0.5) * np.arange(MFCC_DIMS)[:, None])
    mfcc: np.ndarray = (logmel @ basis.T)[:, 1:]
    return mfcc


def _frame_db(audio: np.ndarray) -> np.ndarray:
    n = audio.size // HOP
    x = audio[: n * HOP].reshape(n, HOP).astype(np.float64)
    db: np.ndarray = 10 * np.log10(np.mean(x**2, axis=1) + 1e-10)
    return db


def _pitch(audio: np.ndarray) -> np.ndarray:
    """F0 in Hz per 10 ms frame (NaN where unvoiced), from the normalised autocorrelation of 40 ms windows."""
    n = max(0, (audio.size - _F0_WINDOW) // HOP + 1)
    f0 = np.full(n, np.nan)
    if n == 0:
        return f0
    frames = np.lib.stride_tricks.sliding_window_view(audio.astype(np.float64), _F0_WINDOW)[::HOP][:n]
    frames = frames - frames.mean(axis=1, keepdims=True)
    ac = np.fft.irfft(np.abs(np.fft.rfft(frames, 2 * _F0_WINDOW, axis=1)) ** 2, axis=1)[:, :_F0_WINDOW]
    ac = ac / (ac[:, :1] + 1e-9)
    lo, hi = int(SAMPLE_RATE_HZ / _F0_MAX_HZ), int(SAMPLE_RATE_HZ / _F0_MIN_HZ)
    lag = lo + np.argmax(ac[:, lo:hi], axis=1)
    voiced = ac[np.arange(n), lag] > _F0_VOICED
    f0[voiced] = SAMPLE_RATE_HZ / lag[voiced]
    return f0


def _log_det(x: np.ndarray) -> float:
    cov = np.cov(x, rowvar=False) + 1e-6 * np.eye(x.shape[1])
    return float(np.linalg.slogdet(cov)[1])


def _bic_ratio(left: np.ndarray, right: np.ndarray) -> float:
    """Log-likelihood gained by modelling the sides apart, over BIC's penalty for the extra Gaussian."""
    both = np.vstack([left, right])
    n, d = len(both), both.shape[1]
    gain = 0.5 * (n * _log_det(both) - len(left) * _log_det(left) - len(right) * _log_det(right))
    penalty = 0.5 * (d + d * (d + 1) / 2) * np.log(n)
    return float(gain / penalty)


def _pauses(quiet: np.ndarray, min_frames: int) -> list[tuple[int, int]]:
    """``[start, end)`` frame runs of quiet at least ``min_frames`` long, not touching either edge."""
    edges = np.diff(np.concatenate([[0], quiet.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [(int(a), int(b)) for a, b in zip(starts, ends, strict=True)
            if b - a >= min_frames and a > 0 and b < quiet.size]  # fmt: skip


def gap_scores(audio: np.ndarray, *, min_gap_ms: int = 50) -> list[tuple[int, float | None]]:
    """``(sample offset of the pause's middle, score)`` for every pause in ``audio`` (float32, 16 kHz);
    the score is None when either side has too little voiced audio to test."""
    audio = np.asarray(audio, dtype=np.float32)
    feats, db, f0 = _mfcc(audio), _frame_db(audio), _pitch(audio)
    m = min(len(feats), len(db))
    if m == 0:
        return []
    quiet = db[:m] < db[:m].max() - QUIET_BELOW_PEAK_DB
    f0 = np.concatenate([f0, np.full(max(0, m - f0.size), np.nan)])[:m]
    ctx, min_side = CONTEXT_MS // 10, MIN_SIDE_MS // 10
    out: list[tuple[int, float | None]] = []
    for a, b in _pauses(quiet, max(1, min_gap_ms // 10)):
        left = np.arange(max(0, a - ctx), a)
        right = np.arange(b, min(m, b + ctx))
        left, right = left[~quiet[left]], right[~quiet[right]]
        middle = (a + b) // 2 * HOP
        if len(left) < min_side or len(right) < min_side:
            out.append((middle, None))
            continue
        score = _bic_ratio(feats[left], feats[right])
        fl, fr = f0[left], f0[right]
        fl, fr = fl[~np.isnan(fl)], fr[~np.isnan(fr)]
        if fl.size and fr.size:
            score += PITCH_WEIGHT * 12 * abs(float(np.log2(np.median(fl) / np.median(fr))))
        out.append((middle, score))
    return out


def select(scores: list[tuple[int, float | None]], threshold: float) -> list[int]:
    """The pauses scoring at least ``threshold`` that also score highest within :data:`SUPPRESS_MS` either
    side: a window reaching across a real change lifts the pauses next to it too, and one change is one cut."""
    reach = SUPPRESS_MS * SAMPLE_RATE_HZ // 1000
    scored = [(at, s) for at, s in scores if s is not None]
    return [at for at, s in scored
            if s >= threshold and all(s >= t or abs(at - b) > reach for b, t in scored)]  # fmt: skip


def score_at(audio: np.ndarray, sample: int, *, min_gap_ms: int = 50, reach_ms: int = 150) -> float | None:
    """The score of the pause in ``audio`` nearest ``sample`` (its middle within ``reach_ms``); None when
    there is none there or either side has too little voiced audio to test."""
    reach = reach_ms * SAMPLE_RATE_HZ // 1000
    near = [(abs(at - sample), s) for at, s in gap_scores(audio, min_gap_ms=min_gap_ms) if abs(at - sample) <= reach]
    return min(near, key=lambda x: x[0])[1] if near else None


def change_points(audio: np.ndarray, params: ChangeParams) -> list[int]:
    """Sample offsets at which ``audio`` (one segment, float32 16 kHz) changes speaker, in order."""
    return select(gap_scores(audio, min_gap_ms=params.min_gap_ms), params.threshold)
