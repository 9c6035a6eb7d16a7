"""Test speech and media made on the fly: espeak-ng sentences, dialogues on a timeline, wav and mp4 files.

::

    clip = synthesize("Hello there.")                    # float32 mono 16 kHz
    path = write_wav(tmp_path / "a.wav", clip)
    talk = make_dialogue([("Hi.", 0.5), ("Bye.", 0.8)])  # sentences + spans in samples
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from bench import make_testset
from stream.evaluation import word_errors
from stream.records import SAMPLE_RATE_HZ

__all__ = [
    "ASR_COMPUTE_TYPES",
    "ASR_SENTENCES",
    "Dialogue",
    "espeak_available",
    "make_dialogue",
    "make_video_mp4",
    "requires_espeak",
    "requires_ffmpeg",
    "synthesize",
    "tone",
    "word_error_rate",
    "write_wav",
]


# CTranslate2's int8 kernels hear the odd word differently on different CPU families (Intel vs AMD).
# float32 takes another kernel path that disagrees in the same way, so an expectation on Whisper's
# output that holds under both is portable. Tests on transcripts run under both, on several sentences
# with one bound on their joint WER, never on one sentence's exact words.
ASR_COMPUTE_TYPES = ("int8", "float32")

ASR_SENTENCES = (
    "The weather is lovely today and we should go for a walk.",
    "I can't believe you would do something like that.",
    "Please send me the report before the meeting tomorrow.",
    "My brother is coming home for dinner on Friday night.",
    "We need to buy some milk, bread and a dozen eggs.",
)


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


requires_espeak = pytest.mark.skipif(
    not espeak_available(), reason="espeak-ng is not installed (apt-get install espeak-ng)"
)
requires_ffmpeg = pytest.mark.skipif(
    shutil.which("ffmpeg") is None, reason="ffmpeg is not installed (apt-get install ffmpeg)"
)


def write_wav(path: Path, audio: np.ndarray, sample_rate_hz: int = SAMPLE_RATE_HZ) -> Path:
    """Write float32 [-1, 1] (or int16) mono audio as a 16-bit PCM wav."""
    pcm = audio if audio.dtype == np.int16 else np.round(np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as wf:
        wf.setnchannels(1)
        wf.setsampwidth(2)
        wf.setframerate(sample_rate_hz)
        wf.writeframes(pcm.tobytes())
    return path


@functools.lru_cache(maxsize=64)
def _synthesize_cached(text: str, voice: str, speed_wpm: int, pitch: int) -> bytes:
    return make_testset.synthesize(text, voice=voice, speed_wpm=speed_wpm, pitch=pitch).tobytes()


def synthesize(text: str, *, voice: str = "en-us", speed_wpm: int = 160, pitch: int = 50) -> np.ndarray:
    """espeak-ng speech for ``text`` as float32 mono at 16 kHz, leading/trailing silence trimmed
    (``bench.make_testset.synthesize``, cached; skips the test without espeak-ng)."""
    if not espeak_available():
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    return np.frombuffer(_synthesize_cached(text, voice, speed_wpm, pitch), dtype=np.float32).copy()


def tone(seconds: float, freq_hz: float = 440.0, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(round(seconds * SAMPLE_RATE_HZ)) / SAMPLE_RATE_HZ
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


@dataclass(frozen=True, slots=True)
class Dialogue:
    """Sentences placed on a timeline with silence between them."""

    audio: np.ndarray  # float32 mono 16 kHz
    texts: tuple[str, ...]
    spans: tuple[tuple[int, int], ...]  # (start, end) sample of each sentence's speech

    def spans_s(self) -> list[tuple[float, float]]:
        return [(a / SAMPLE_RATE_HZ, b / SAMPLE_RATE_HZ) for a, b in self.spans]


def make_dialogue(
    lines: Sequence[tuple[str, float]] | Sequence[str],
    *,
    lead_s: float = 0.5,
    gap_s: float = 1.0,
    tail_s: float = 1.0,
    noise: float = 0.0,
    seed: int = 0,
    **voice: object,
) -> Dialogue:
    """Speech for each line, separated by silence. Lines are texts or (text, gap_after_s) pairs."""
    pieces: list[np.ndarray] = [np.zeros(round(lead_s * SAMPLE_RATE_HZ), dtype=np.float32)]
    spans: list[tuple[int, int]] = []
    texts: list[str] = []
    pos = pieces[0].size
    for i, line in enumerate(lines):
        text, gap = (line, gap_s) if isinstance(line, str) else line
        speech = synthesize(text, **voice)  # type: ignore[arg-type]
        spans.append((pos, pos + speech.size))
        texts.append(text)
        pieces.append(speech)
        pos += speech.size
        after = tail_s if i == len(lines) - 1 else gap
        pieces.append(np.zeros(round(after * SAMPLE_RATE_HZ), dtype=np.float32))
        pos += pieces[-1].size
    audio = np.concatenate(pieces)
    if noise:
        audio = audio + np.random.default_rng(seed).normal(0, noise, audio.size).astype(np.float32)
    return Dialogue(audio.astype(np.float32), tuple(texts), tuple(spans))


def make_video_mp4(path: Path, audio_wav: Path) -> Path:
    """An mp4 with a small test-pattern H.264 video track and ``audio_wav`` as AAC 44.1 kHz stereo."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed (apt-get install ffmpeg)")
    subprocess.run(
        [
            "ffmpeg",
            "-y",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=160x120:rate=10",
            "-i",
            str(audio_wav),
            "-shortest",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-ar",
            "44100",
            "-ac",
            "2",
            str(path),
        ],
        check=True,
        capture_output=True,
    )
    return path


def word_error_rate(reference: str, hypothesis: str) -> float:
    """The evaluation's WER (``stream.evaluation.word_errors``: jiwer after ``normalise_words``)."""
    return word_errors(reference, hypothesis).wer
