"""Stream-like augmentation of clean clips: what the live segmenter hands the audio branch.

A clip in a corpus is not what the stream's segmenter produces. The stream's utterance starts
``pre_roll`` before the VAD's first speech frame and ends ``post_roll`` after its last, carries the
room's (or the recording's) background noise, and sits at another level. :func:`stream_like` cuts a
clip the same way around its energy-detected speech, adds coloured noise at a random level and
changes the gain, so that the audio branch is trained on the inputs it will see. Seeded: the same
``rng`` state gives the same variant.
"""

from __future__ import annotations

import numpy as np

from training.asr_features import ENCODER_FRAME_SAMPLES, speech_span

__all__ = ["coloured_noise", "stream_like"]

SAMPLE_RATE_HZ = 16000


def coloured_noise(n: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise: ``white``, ``pink`` (1/f power) or ``brown`` (1/f^2)."""
    white = rng.standard_normal(n)
    if colour != "white":
        spec = np.fft.rfft(white)
        f = np.maximum(np.fft.rfftfreq(n, 1 / SAMPLE_RATE_HZ), 20.0)
        spec /= f ** (0.5 if colour == "pink" else 1.0)
        white = np.fft.irfft(spec, n)
    rms = float(np.sqrt(np.mean(white**2))) or 1.0
    return (white / rms).astype(np.float32)


def stream_like(
    audio: np.ndarray,
    rng: np.random.Generator,
    *,
    pre_roll_s: tuple[float, float] = (0.05, 0.45),
    post_roll_s: tuple[float, float] = (0.05, 0.35),
    noise_dbfs: tuple[float, float] = (-70.0, -38.0),
    p_no_noise: float = 0.2,
    gain_db: tuple[float, float] = (-12.0, 6.0),
) -> np.ndarray:
    """``audio``'s speech with a random pre/post roll, background noise and level (see module doc).

    Roll beyond the clip's own edges is silence (then noise is added over everything).
    """
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    first, end = speech_span(audio, margin_frames=0)
    s0, s1 = first * ENCODER_FRAME_SAMPLES, min(audio.size, end * ENCODER_FRAME_SAMPLES)
    pre = int(rng.uniform(*pre_roll_s) * SAMPLE_RATE_HZ)
    post = int(rng.uniform(*post_roll_s) * SAMPLE_RATE_HZ)
    out = np.zeros(pre + (s1 - s0) + post, dtype=np.float32)
    a0 = max(0, s0 - pre)
    a1 = min(audio.size, s1 + post)
    out[pre - (s0 - a0) : pre - (s0 - a0) + (a1 - a0)] = audio[a0:a1]
    out *= np.float32(10.0 ** (rng.uniform(*gain_db) / 20.0))
    if rng.random() >= p_no_noise:
        colour = str(rng.choice(["white", "pink", "brown"]))
        level = 10.0 ** (rng.uniform(*noise_dbfs) / 20.0)
        out += np.float32(level) * coloured_noise(out.size, colour, rng)
    return np.clip(out, -1.0, 1.0)
