"""training.audio: PyAV decoding of generated wav/mp4 files, resampling, streaming, clear errors."""

from __future__ import annotations

import tracemalloc
import wave
from pathlib import Path

import numpy as np
import pytest

from tests.training.meld_fakes import needs_ffmpeg, tone, write_mp4, write_wav
from training.audio import AudioDecodeError, iter_audio_chunks, load_audio


def test_wav_at_other_rate_and_channels_is_resampled_to_16k_mono(tmp_path: Path) -> None:
    audio = tone(220, 1.0, seed=0, sr=44100)
    write_wav(tmp_path / "a.wav", audio, sr=44100, channels=2)
    out = load_audio(tmp_path / "a.wav")
    assert out.dtype == np.float32 and out.ndim == 1
    assert abs(out.size - 16000) < 200
    assert np.abs(out).max() <= 1.0
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spectrum) * 16000 / out.size - 220) < 10  # the tone survives resampling


@needs_ffmpeg
def test_mp4_with_video_track_decodes_its_audio(tmp_path: Path) -> None:
    audio = tone(300, 1.2, seed=1)
    write_mp4(tmp_path / "dia1_utt0.mp4", audio, tmp_path)
    out = load_audio(tmp_path / "dia1_utt0.mp4")
    assert abs(out.size - audio.size) < 0.1 * 16000  # AAC priming may add a few ms
    chunks = list(iter_audio_chunks(tmp_path / "dia1_utt0.mp4", chunk_samples=1600))
    assert all(c.size == 1600 for c in chunks[:-1]) and 0 < chunks[-1].size <= 1600
    assert sum(c.size for c in chunks) == out.size


def test_chunks_concatenate_to_the_whole_file(tmp_path: Path) -> None:
    write_wav(tmp_path / "a.wav", tone(180, 2.0, seed=2), sr=22050)
    whole = load_audio(tmp_path / "a.wav")
    joined = np.concatenate(list(iter_audio_chunks(tmp_path / "a.wav", chunk_samples=999)))
    np.testing.assert_array_equal(whole, joined)


def test_streaming_a_long_file_keeps_memory_flat(tmp_path: Path) -> None:
    path = tmp_path / "long.wav"
    seconds = 600  # 10 minutes at 8 kHz: 9.6 MB of int16, 38 MB as float32 at 16 kHz
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        block = (np.sin(np.arange(8000) * 0.3) * 8000).astype(np.int16).tobytes()
        for _ in range(seconds):
            w.writeframes(block)
    tracemalloc.start()
    total = 0
    for chunk in iter_audio_chunks(path, chunk_samples=1600):
        total += chunk.size
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert abs(total - seconds * 16000) < 1000
    assert peak < 4_000_000, f"peak {peak / 1e6:.1f} MB while streaming"


@needs_ffmpeg
def test_video_without_audio_stream_is_a_clear_error(tmp_path: Path) -> None:
    import subprocess

    path = tmp_path / "silent.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "color=c=black:s=32x32:d=1",
                    "-c:v", "libx264", str(path)], check=True)  # fmt: skip
    with pytest.raises(AudioDecodeError, match="no audio stream") as info:
        load_audio(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty"), (b"this is not audio at all" * 10, "cannot open"), (None, "not found")],
)
def test_bad_files_raise_audio_decode_error_naming_the_file(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "bad.wav"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(AudioDecodeError, match=message) as info:
        load_audio(path)
    assert "bad.wav" in str(info.value)
    assert isinstance(info.value, ValueError)
    with pytest.raises(AudioDecodeError):
        list(iter_audio_chunks(path, chunk_samples=160))


def test_chunk_size_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="chunk_samples"):
        list(iter_audio_chunks(tmp_path / "x.wav", chunk_samples=0))
