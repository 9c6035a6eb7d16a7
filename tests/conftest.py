"""Shared test helpers: espeak-ng speech, silence and media files made on the fly.

Anything here is general on purpose so every test package can reuse it::

    def test_x(speech_factory, tmp_path):
        clip = speech_factory("Hello there.")                # float32 mono 16 kHz
        path = write_wav(tmp_path / "a.wav", clip)
        talk = make_dialogue([("Hi.", 0.5), ("Bye.", 0.8)])  # sentences + spans in samples
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SAMPLE_RATE_HZ = 16000

# The `redis_server` fixture (a real redis-server on a free loopback port): tests/redisd.py.
pytest_plugins = ("redisd",)

__all__ = [
    "ASR_COMPUTE_TYPES",
    "ASR_SENTENCES",
    "SAMPLE_RATE_HZ",
    "Dialogue",
    "FakePrediction",
    "ScriptedPredictor",
    "ScriptedTranscriber",
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


def _read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as wf:
        rate, width, channels = wf.getframerate(), wf.getsampwidth(), wf.getnchannels()
        raw = wf.readframes(wf.getnframes())
    if width != 2:
        raise ValueError(f"{path}: expected 16-bit PCM")
    pcm = np.frombuffer(raw, dtype=np.int16).reshape(-1, channels).mean(axis=1)
    audio = (pcm / 32768.0).astype(np.float32)
    if rate != SAMPLE_RATE_HZ:
        n = round(audio.size * SAMPLE_RATE_HZ / rate)
        audio = np.interp(np.linspace(0, audio.size - 1, n), np.arange(audio.size), audio).astype(np.float32)
    return audio


@functools.lru_cache(maxsize=64)
def _synthesize_cached(text: str, voice: str, speed_wpm: int, pitch: int) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "s.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(speed_wpm), "-p", str(pitch), "-w", str(out), text],
            check=True,
            capture_output=True,
        )
        return _read_wav(out).tobytes()


def synthesize(text: str, *, voice: str = "en-us", speed_wpm: int = 160, pitch: int = 50) -> np.ndarray:
    """espeak-ng speech for ``text`` as float32 mono at 16 kHz, leading/trailing silence trimmed."""
    if not espeak_available():
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    audio = np.frombuffer(_synthesize_cached(text, voice, speed_wpm, pitch), dtype=np.float32).copy()
    voiced = np.flatnonzero(np.abs(audio) > 0.01)
    return audio[voiced[0] : voiced[-1] + 1] if voiced.size else audio


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


def _words(text: str) -> list[str]:
    return "".join(c.lower() if c.isalnum() or c in " '" else " " for c in text).split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Levenshtein distance over lower-cased words, divided by the reference's word count."""
    ref, hyp = _words(reference), _words(hypothesis)
    if not ref:
        return float(bool(hyp))
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i]
        for j, h in enumerate(hyp, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h)))
        prev = cur
    return prev[-1] / len(ref)


@pytest.fixture
def speech_factory() -> Callable[..., np.ndarray]:
    """``speech_factory(text, voice=..., speed_wpm=..., pitch=...)`` -> float32 speech (skips without espeak)."""
    return synthesize


# Scripted fakes for the pipeline's models -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FakePrediction:
    label: str
    scores: dict[str, float]
    modalities: tuple[str, ...]


class ScriptedPredictor:
    """Stands in for ``training.inference.EmotionPredictor``: a fixed label per text keyword.

    Records every ``predict`` call (``calls``: list of (texts, audio)) so tests can check batching
    and which modalities were passed; ``fail_on`` makes a call whose texts contain it raise.
    """

    def __init__(
        self,
        *,
        uses_text: bool = True,
        uses_audio: bool = True,
        keywords: dict[str, str] | None = None,
        fail_on: str | None = None,
        delay_s: float = 0.0,
    ) -> None:
        from stream.protocol import LABELS

        self.labels = tuple(LABELS)
        self.uses_text = uses_text
        self.uses_audio = uses_audio
        self.model_ids = {"classifier": "scripted"}
        self.keywords = keywords or {}
        self.fail_on = fail_on
        self.delay_s = delay_s
        self.calls: list[tuple[list[str | None], list[np.ndarray | None]]] = []

    def predict(self, texts: Sequence[str | None], audio: Sequence[np.ndarray | None]) -> list[FakePrediction]:
        import time

        self.calls.append((list(texts), list(audio)))
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_on is not None and any(t and self.fail_on in t for t in texts):
            raise RuntimeError(f"scripted failure on {self.fail_on!r}")
        out = []
        for text, clip in zip(texts, audio, strict=True):
            if text is None and clip is None:
                raise ValueError("a row needs text or audio")
            label = next((lab for key, lab in self.keywords.items() if text and key in text.lower()), "neutral")
            scores = {lab: (0.7 if lab == label else 0.05) for lab in self.labels}
            mods = tuple(m for m, x in (("text", text), ("audio", clip)) if x is not None)
            out.append(FakePrediction(label, scores, mods))
        return out


class ScriptedTranscriber:
    """Stands in for ``WhisperTranscriber``: returns ``texts`` in order (``None`` = raise)."""

    model_id = "scripted-asr"
    paths: dict[str, int] = {}  # noqa: RUF012 - read-only: a fake decodes one way

    def __init__(self, texts: Sequence[str | None] = (), *, default: str = "hello") -> None:
        self.texts = list(texts)
        self.default = default
        self.calls = 0

    def transcribe(self, audio: np.ndarray) -> object:
        from stream.records import Transcript

        text = self.texts[self.calls] if self.calls < len(self.texts) else self.default
        self.calls += 1
        if text is None:
            raise RuntimeError("scripted transcription failure")
        return Transcript(text, "en", -0.2, 0.01, None if text else "empty", text)
