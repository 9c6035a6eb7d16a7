"""Writes mel_reference.npz: librosa's output for the GE2E front-end, the reference for test_speaker_encoder.

Run once, in a throwaway virtual environment that has librosa (the project itself never imports it):

    python -m venv /tmp/librosa-venv && /tmp/librosa-venv/bin/pip install librosa==0.10.2.post1
    /tmp/librosa-venv/bin/python tests/stream/data/make_mel_reference.py

The calls are exactly Resemblyzer 0.1.4's ``wav_to_mel_spectrogram`` (``librosa.feature.melspectrogram``
with sr=16000, n_fft=400, hop_length=160, n_mels=40), with ``pad_mode="reflect"``: the padding of the
librosa versions the encoder was trained with (librosa 0.10 changed its default to zeros).
"""

from pathlib import Path

import librosa
import numpy as np


def signal() -> np.ndarray:
    """0.75 s: two tones, a chirp and a click train (the test rebuilds the same samples)."""
    t = np.arange(12000) / 16000
    wav = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * (300 + 2500 * t) * t)
    wav[::800] += 0.5
    return wav.astype(np.float32)


if __name__ == "__main__":
    wav = signal()
    mel = (
        librosa.feature.melspectrogram(y=wav, sr=16000, n_fft=400, hop_length=160, n_mels=40, pad_mode="reflect")
        .astype(np.float32)
        .T
    )
    bank = librosa.filters.mel(sr=16000, n_fft=400, n_mels=40).astype(np.float32)
    out = Path(__file__).with_name("mel_reference.npz")
    np.savez_compressed(out, mel=mel, filterbank=bank, librosa_version=np.array(librosa.__version__))
    print(out, mel.shape, bank.shape)
