"""training.features: prosody, silence trimming, Whisper-encoder vectors and the on-disk cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.training.meld_fakes import tone, write_wav
from training.features import AudioFeatureExtractor, FeatureCache, FeatureConfig, mel_filterbank
from training.prosody import PROSODY_DIM, pitch_track, prosody_features, trim_silence


def test_prosody_tracks_pitch_and_is_finite_on_silence() -> None:
    f0 = pitch_track(tone(150, 1.0, seed=0))
    assert np.median(f0[f0 > 0]) == pytest.approx(150, rel=0.03)
    low = prosody_features(tone(120, 1.5, seed=0))
    high = prosody_features(tone(240, 1.5, seed=0))
    assert low.shape == (PROSODY_DIM,) and np.isfinite(low).all()
    assert low[5] == pytest.approx(12 * np.log2(1.2), abs=0.5)  # pitch mean in semitones re 100 Hz
    assert high[5] - low[5] == pytest.approx(12.0, abs=0.5)  # one octave up
    assert low[8] > 0  # energy peaks per second (speaking rate)
    silent = prosody_features(np.zeros(8000, dtype=np.float32))
    assert np.isfinite(silent).all()
    assert np.isfinite(prosody_features(np.zeros(10, dtype=np.float32))).all()


@pytest.mark.parametrize(
    ("n_freqs", "n_mels", "rate", "f_min", "f_max"), [(201, 64, 16000, 0.0, None), (257, 40, 8000, 60.0, 3800.0)]
)
def test_mel_filterbank_is_the_one_torchaudio_gave(
    n_freqs: int, n_mels: int, rate: int, f_min: float, f_max: float | None
) -> None:
    # torchaudio is not a dependency; transformers' filterbank documents parity with
    # torchaudio.functional.melscale_fbanks for norm=None, mel_scale="htk" (the log-mel branch's settings).
    from transformers.audio_utils import mel_filter_bank

    want = mel_filter_bank(
        num_frequency_bins=n_freqs,
        num_mel_filters=n_mels,
        min_frequency=f_min,
        max_frequency=rate / 2 if f_max is None else f_max,
        sampling_rate=rate,
        norm=None,
        mel_scale="htk",
    )
    got = mel_filterbank(n_freqs, n_mels, rate, f_min, f_max)
    assert got.shape == (n_freqs, n_mels) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert (got >= 0).all() and (got.max(axis=0) > 0).all()  # every filter has a peak


def test_trim_silence_keeps_the_speech_with_margins() -> None:
    speech = tone(200, 0.8, seed=1)
    audio = np.concatenate([np.zeros(16000, np.float32), speech, np.zeros(8000, np.float32)])
    trimmed = trim_silence(audio)
    assert speech.size <= trimmed.size <= speech.size + 2 * 1600 + 800
    silence = np.zeros(16000, np.float32)
    assert trim_silence(silence).size == silence.size


@pytest.mark.slow
def test_whisper_features_cache_and_long_audio(tmp_path: Path) -> None:
    extractor = AudioFeatureExtractor(FeatureConfig(trim_silence=True))
    assert extractor.dim == 2 * 512 + PROSODY_DIM  # Whisper base width, mean + std
    clip = tone(220, 1.3, seed=2)
    a = extractor.compute([clip])
    assert a.shape == (1, extractor.dim) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, extractor.compute([clip]))  # deterministic
    other = extractor.compute([tone(440, 1.3, seed=2)])
    assert not np.allclose(a, other)
    long = extractor.compute([np.tile(clip, 25)])  # 32.5 s: two encoder windows pooled together
    assert np.isfinite(long).all()
    with pytest.raises(ValueError, match="empty"):
        extractor.compute([np.zeros(0, np.float32)])

    path = tmp_path / "dia0_utt0.wav"
    write_wav(path, clip)
    cache = FeatureCache(extractor, tmp_path / "cache")
    first, errors = cache.get_files([path, tmp_path / "missing.wav"])
    assert errors[0] == "" and "missing" in errors[1]
    assert cache.misses == 1
    again, _ = cache.get_files([path])
    assert cache.hits == 1
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_allclose(first[0], a[0], atol=0.05)  # wav int16 rounding only
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a changed file misses the cache
    cache.get_files([path])
    assert cache.misses == 2
    other_cfg = FeatureCache(AudioFeatureExtractor(FeatureConfig(trim_silence=False)), tmp_path / "cache")
    assert other_cfg.folder != cache.folder
