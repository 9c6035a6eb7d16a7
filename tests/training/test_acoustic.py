"""Spectral and voice-quality statistics (training.acoustic): what they measure, on signals whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from training.acoustic import ACOUSTIC_DIM, acoustic_features

SR = 16000
CENTROID, ALPHA, VOICED, JITTER = 57, 60, 67, 68  # positions in the vector (see the module docstring)


def _voice(seconds: float, *, harmonics: list[float], f0_jump: float = 0.0, seed: int = 0) -> np.ndarray:
    """A harmonic 'voice' at ~140 Hz; ``f0_jump``: random relative F0 change every 10 ms (jitter)."""
    rng = np.random.default_rng(seed)
    steps = int(seconds * 100)
    f0 = 140.0 * (1.0 + 0.03 * np.sin(np.linspace(0, 6, steps)))  # smooth intonation
    f0 = f0 * np.exp(f0_jump * rng.standard_normal(steps))
    f = np.repeat(f0, SR // 100)
    phase = 2 * np.pi * np.cumsum(f) / SR
    sig = sum(a * np.sin((k + 1) * phase) for k, a in enumerate(harmonics))
    return (0.3 * sig / sum(harmonics) + 0.003 * rng.standard_normal(f.size)).astype(np.float32)


DARK = [1.0, 0.5, 0.25, 0.12, 0.06]
BRIGHT = [1.0, 0.9, 0.9, 0.8, 0.8, 0.7, 0.7, 0.7, 0.6, 0.6, 0.6, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]


NOISE = np.random.default_rng(0).standard_normal(SR)


@pytest.mark.parametrize("audio", [np.zeros(10), np.zeros(SR), np.ones(SR), NOISE])
def test_statistics_are_finite_for_any_input(audio: np.ndarray) -> None:
    out = acoustic_features(audio.astype(np.float32))
    assert out.shape == (ACOUSTIC_DIM,) and out.dtype == np.float32 and np.isfinite(out).all()


def test_statistics_do_not_depend_on_the_level() -> None:
    """Gain is the speaker offset's and the standardisation's business: the statistics are ratios."""
    voice = _voice(1.5, harmonics=DARK)
    np.testing.assert_allclose(acoustic_features(0.05 * voice), acoustic_features(voice), rtol=1e-3, atol=1e-3)


def test_a_brighter_voice_has_more_energy_up_high() -> None:
    dark, bright = acoustic_features(_voice(1.5, harmonics=DARK)), acoustic_features(_voice(1.5, harmonics=BRIGHT))
    assert bright[CENTROID] > dark[CENTROID] + 0.5  # log Hz: well above
    assert bright[ALPHA] < dark[ALPHA] - 6.0  # dB: less of the energy under 1 kHz


def test_voicing_and_jitter() -> None:
    steady, shaky = _voice(1.5, harmonics=DARK), _voice(1.5, harmonics=DARK, f0_jump=0.04)
    noise = np.random.default_rng(1).standard_normal(int(1.5 * SR)).astype(np.float32) * 0.1
    s, k, n = acoustic_features(steady), acoustic_features(shaky), acoustic_features(noise)
    assert s[VOICED] > 0.9 and n[VOICED] < 0.2
    assert k[JITTER] > s[JITTER] + 0.1  # semitones between 10 ms frames
