"""The GE2E front-end against librosa (a stored reference), and the packaged encoder itself."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from stream.stages.speaker_encoder import (
    GE2E_SHA256,
    SpeakerEncoder,
    mel_filterbank,
    mel_spectrogram,
    partial_slices,
    resolve_speaker_encoder,
    voiced,
)
from training.weights import ModelError

REFERENCE = Path(__file__).parent / "data" / "mel_reference.npz"


def _signal() -> np.ndarray:  # the same samples as tests/stream/data/make_mel_reference.py
    t = np.arange(12000) / 16000
    wav = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * (300 + 2500 * t) * t)
    wav[::800] += 0.5
    return wav.astype(np.float32)


def test_filterbank_matches_librosa() -> None:
    ref = np.load(REFERENCE)["filterbank"]
    np.testing.assert_allclose(mel_filterbank(), ref, rtol=1e-4, atol=1e-7)


def test_mel_spectrogram_matches_librosa() -> None:
    ref = np.load(REFERENCE)["mel"]
    ours = mel_spectrogram(_signal())
    assert ours.shape == ref.shape == (76, 40)
    np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-5 * float(ref.max()))


def test_mel_rejects_stereo() -> None:
    with pytest.raises(ValueError, match="mono"):
        mel_spectrogram(np.zeros((2, 100), np.float32))


def test_partial_slices_cover_long_audio_with_overlapping_windows() -> None:
    assert len(partial_slices(8000)) == 1  # shorter than one 1.6 s window: one, zero-padded
    slices = partial_slices(16000 * 5)
    assert len(slices) > 3 and all(s.stop - s.start == 160 for s in slices)
    assert slices[1].start - slices[0].start < 160  # overlapping


def test_voiced_keeps_speech_and_drops_silence() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    # A buzzy "voice" (harmonics of 140 Hz) between two seconds of near silence.
    voice = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 20)) * 0.2
    wav = np.concatenate([rng.normal(0, 1e-4, 32000), voice, rng.normal(0, 1e-4, 32000)]).astype(np.float32)
    kept = voiced(wav)
    assert 0.8 * 16000 <= kept.size <= 1.5 * 16000


def test_a_missing_local_encoder_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="neither 'ge2e'"):
        resolve_speaker_encoder(str(tmp_path / "nope.pt"))


def test_a_file_that_is_no_encoder_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot load speaker encoder"):
        SpeakerEncoder.load(str(bad))


needs_resemblyzer = pytest.mark.skipif(
    importlib.util.find_spec("resemblyzer") is None, reason="Resemblyzer==0.1.4 is not installed (make setup)"
)


@needs_resemblyzer
def test_packaged_weights_pass_their_hash_check() -> None:
    resolved = resolve_speaker_encoder("ge2e")
    assert resolved.packaged and resolved.path.name == "pretrained.pt"
    assert "Resemblyzer==0.1.4" in resolved.model_id
    assert len(GE2E_SHA256) == 64


@needs_resemblyzer
@pytest.mark.slow
def test_packaged_encoder_embeds_to_unit_vectors_and_loads_without_librosa() -> None:
    import sys

    encoder = SpeakerEncoder.load("ge2e")
    assert "librosa" not in sys.modules and "resemblyzer" not in sys.modules
    rng = np.random.default_rng(1)
    t = np.arange(40000) / 16000
    voice = (sum(np.sin(2 * np.pi * 120 * k * t) / k for k in range(1, 25)) * 0.1).astype(np.float32)
    emb = encoder.embed(voice + rng.normal(0, 1e-3, voice.size).astype(np.float32))
    assert emb.shape == (256,) and abs(float(np.linalg.norm(emb)) - 1) < 1e-5
    assert encoder.embed_windows(voice).shape[0] >= 2  # 2.5 s: several windows, averaged
