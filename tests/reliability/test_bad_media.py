"""The bad-media corpus through the shared decoder (``training.audio``), file by file.

Each file either decodes correctly -- float32, mono, 16 kHz, inside [-1, 1], the right length and
content -- or raises :class:`AudioDecodeError` whose message names the file. Streaming
(``iter_audio_chunks``) must agree sample for sample with whole-file decoding, and its memory must
not grow with the file's length.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from training.audio import AudioDecodeError, iter_audio_chunks, load_audio

from .media import FFMPEG, MediaCase, build_corpus, make_long_silence

pytestmark = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not installed (Debian package ffmpeg)")

RATE = 16000
CHUNK = 1600
CASE_NAMES = [
    "empty.wav",
    "not-audio.wav",
    "not-audio.mp4",
    "random.mp3",
    "random.flac",
    "directory.wav",
    "header-only.wav",
    "truncated.wav",
    "truncated.mp3",
    "truncated-moov-last.mp4",
    "truncated-faststart.m4a",
    "stereo.wav",
    "surround-5.1.flac",
    "8bit.wav",
    "24bit.wav",
    "float32.wav",
    "loud.wav",
    "8khz.wav",
    "96khz.flac",
    "flac-named.mp3",
    "odd name — é 日本.wav",
    "silence.flac",
    "noise.wav",
    "music.ogg",
    "video-with-audio.mp4",
    "video-no-audio.mp4",
    "video-with-audio.mkv",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, MediaCase]:
    cases = build_corpus(tmp_path_factory.mktemp("bad-media"))
    assert sorted(cases) == sorted(CASE_NAMES), "keep CASE_NAMES in step with media.build_corpus"
    return cases


def dominant_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.argmax(spectrum) * RATE / x.size)


def check_decoded(case: MediaCase, audio: np.ndarray) -> None:
    assert audio.dtype == np.float32 and audio.ndim == 1, (audio.dtype, audio.shape)
    assert audio.size > 0
    assert np.all(np.isfinite(audio))
    assert float(np.max(np.abs(audio))) <= 1.0
    seconds = audio.size / RATE
    assert case.duration_s is not None
    if case.expect == "audio":
        assert abs(seconds - case.duration_s) <= case.tolerance_s, f"{case.name}: {seconds:.3f} s"
    else:
        assert seconds <= case.duration_s + case.tolerance_s
    if case.tone_hz is not None:
        mid = audio[audio.size // 4 : audio.size // 4 + RATE // 4]  # skip codec start-up
        assert abs(dominant_hz(mid) - case.tone_hz) < 10, f"{case.name}: {dominant_hz(mid):.1f} Hz"
        assert float(np.sqrt(np.mean(mid**2))) > 0.05, f"{case.name}: the tone was lost (downmix?)"
    if case.silent:
        assert float(np.max(np.abs(audio))) < 1e-3


def check_error(case: MediaCase, exc: AudioDecodeError) -> None:
    assert case.path.name in str(exc), f"the error must name the file: {exc}"


@pytest.mark.parametrize("name", CASE_NAMES)
def test_load_audio(corpus: dict[str, MediaCase], name: str) -> None:
    case = corpus[name]
    try:
        audio = load_audio(case.path, sample_rate_hz=RATE)
    except AudioDecodeError as exc:
        assert case.expect in ("error", "either"), f"{name} should decode: {exc}"
        check_error(case, exc)
        return
    assert case.expect in ("audio", "either"), f"{name} decoded to {audio.size} samples but should be refused"
    check_decoded(case, audio)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_iter_audio_chunks(corpus: dict[str, MediaCase], name: str) -> None:
    case = corpus[name]
    chunks: list[np.ndarray] = []
    try:
        for chunk in iter_audio_chunks(case.path, chunk_samples=CHUNK, sample_rate_hz=RATE):
            chunks.append(chunk)
    except AudioDecodeError as exc:
        assert case.expect in ("error", "either"), f"{name} should stream: {exc}"
        check_error(case, exc)
        return
    assert case.expect in ("audio", "either"), f"{name} streamed but should be refused"
    assert all(c.size == CHUNK for c in chunks[:-1]) and 0 < chunks[-1].size <= CHUNK
    streamed = np.concatenate(chunks)
    check_decoded(case, streamed)
    # Replay (streaming) and training (whole file) must see the very same samples.
    np.testing.assert_array_equal(streamed, load_audio(case.path, sample_rate_hz=RATE))


def test_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.flac"
    with pytest.raises(AudioDecodeError, match="nowhere.flac"):
        load_audio(path)
    with pytest.raises(AudioDecodeError, match="nowhere.flac"):
        next(iter_audio_chunks(path, chunk_samples=CHUNK))


def test_unreadable_file_is_named(corpus: dict[str, MediaCase], tmp_path: Path) -> None:
    import os

    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    path = tmp_path / "locked.wav"
    path.write_bytes(corpus["8bit.wav"].path.read_bytes())
    path.chmod(0)
    with pytest.raises(AudioDecodeError, match="locked.wav"):
        load_audio(path)


class PeakRss:
    """Samples this process's resident memory in a thread while a block runs."""

    def __init__(self, period_s: float = 0.02) -> None:
        self._proc = psutil.Process()
        self._period_s = period_s
        self._stop = threading.Event()
        self.start = self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._period_s):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.start) / 2**20


def stream_and_measure(path: Path, seconds: float) -> tuple[int, float, float]:
    total = 0
    t0 = time.perf_counter()
    with PeakRss() as rss:
        for chunk in iter_audio_chunks(path, chunk_samples=CHUNK, sample_rate_hz=RATE):
            total += chunk.size
    return total, rss.growth_mib, time.perf_counter() - t0


def test_streaming_memory_is_flat_10_minutes(tmp_path: Path) -> None:
    seconds = 600.0
    path = make_long_silence(tmp_path / "ten-minutes.flac", seconds)
    total, growth, _ = stream_and_measure(path, seconds)
    assert abs(total - seconds * RATE) <= RATE * 0.05
    # The decoded file is 37 MiB of float32; streaming must hold only a few chunks.
    assert growth < 16, f"RSS grew {growth:.1f} MiB streaming 10 minutes"


@pytest.mark.slow
def test_streaming_memory_is_flat_one_hour(tmp_path: Path) -> None:
    seconds = 3600.0
    path = make_long_silence(tmp_path / "one-hour.flac", seconds)
    total, growth, elapsed = stream_and_measure(path, seconds)
    assert abs(total - seconds * RATE) <= RATE * 0.05
    # 230 MiB if the file were held; the bound is the same as for 10 minutes: flat, not proportional.
    assert growth < 16, f"RSS grew {growth:.1f} MiB streaming one hour ({elapsed:.1f} s)"
