"""A generated corpus of awkward and broken media, made at test time with ffmpeg and numpy.

Nothing here is committed: :func:`build_corpus` writes every file into a folder the caller owns
(a pytest tmp dir) in a few seconds. Each :class:`MediaCase` says what a correct decoder must do
with the file: decode it (to about ``duration_s`` seconds, with ``tone_hz`` dominant when the content
is one tone), refuse it with an error naming the file, or either of the two (``"either"``: files whose
bytes a lenient demuxer may legitimately salvage, such as random bytes that happen to hold mp3 sync
words).
"""

from __future__ import annotations

import shutil
import subprocess
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

__all__ = ["ESPEAK", "FFMPEG", "MediaCase", "build_corpus", "ffmpeg", "make_long_silence", "make_speech"]

FFMPEG = shutil.which("ffmpeg")
ESPEAK = shutil.which("espeak-ng")

Expect = Literal["audio", "error", "either"]


@dataclass(frozen=True, slots=True)
class MediaCase:
    """One file of the corpus and what decoding it must give."""

    name: str
    path: Path
    expect: Expect
    duration_s: float | None = None  # expected decoded length ("audio"); an upper bound for "either"
    tolerance_s: float = 0.05
    tone_hz: float | None = None  # the dominant frequency after decoding to 16 kHz mono
    silent: bool = False  # every decoded sample must be (near) zero


def ffmpeg(args: Sequence[str], *, stdin: bytes | None = None) -> None:
    """Run ffmpeg quietly; raise with its stderr when it fails."""
    if FFMPEG is None:
        raise RuntimeError("ffmpeg is not installed (Debian package ffmpeg)")
    proc = subprocess.run(
        [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args],
        input=stdin,
        capture_output=True,
        check=False,
        timeout=120,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg {' '.join(args)} failed: {proc.stderr.decode(errors='replace')[-500:]}")


def _sine(freq: float, rate: int, seconds: float) -> list[str]:
    return ["-f", "lavfi", "-i", f"sine=frequency={freq}:sample_rate={rate}:duration={seconds}"]


def _truncate(src: Path, dst: Path, fraction: float) -> None:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])


def build_corpus(folder: Path, *, seed: int = 7) -> dict[str, MediaCase]:
    """Write the corpus into ``folder`` and describe it, keyed by case name."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cases: list[MediaCase] = []

    def add(name: str, expect: Expect, **kw: object) -> None:
        cases.append(MediaCase(name=name, path=folder / name, expect=expect, **kw))  # type: ignore[arg-type]

    # --- nothing to decode ------------------------------------------------------------------------
    (folder / "empty.wav").write_bytes(b"")
    add("empty.wav", "error")
    (folder / "not-audio.wav").write_text("this is a text file, not audio\n" * 200)
    add("not-audio.wav", "error")
    (folder / "not-audio.mp4").write_text("<html><body>404 not found</body></html>\n")
    add("not-audio.mp4", "error")
    (folder / "random.mp3").write_bytes(rng.integers(0, 256, 64 * 1024, dtype=np.uint8).tobytes())
    add("random.mp3", "either", duration_s=10.0)
    (folder / "random.flac").write_bytes(rng.integers(0, 256, 64 * 1024, dtype=np.uint8).tobytes())
    add("random.flac", "either", duration_s=10.0)
    (folder / "directory.wav").mkdir(exist_ok=True)
    add("directory.wav", "error")
    # A valid WAV header announcing data that is not there: no samples at all.
    with wave.open(str(folder / "_tiny.wav"), "wb") as w:  # the stdlib writes the canonical 44-byte header
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.zeros(16000, dtype="<i2").tobytes())
    (folder / "header-only.wav").write_bytes((folder / "_tiny.wav").read_bytes()[:44])
    add("header-only.wav", "error")

    # --- truncated mid-stream ---------------------------------------------------------------------
    ffmpeg([*_sine(440, 16000, 2.0), "-c:a", "pcm_s16le", str(folder / "_full.wav")])
    _truncate(folder / "_full.wav", folder / "truncated.wav", 0.6)
    add("truncated.wav", "audio", duration_s=1.2, tolerance_s=0.02, tone_hz=440)
    ffmpeg([*_sine(440, 44100, 2.0), "-c:a", "libmp3lame", "-b:a", "64k", str(folder / "_full.mp3")])
    _truncate(folder / "_full.mp3", folder / "truncated.mp3", 0.5)
    add("truncated.mp3", "audio", duration_s=1.0, tolerance_s=0.15, tone_hz=440)
    # mp4 with its index (moov) at the end: cut in half, the index is gone.
    ffmpeg([*_sine(440, 44100, 2.0), "-c:a", "aac", "-b:a", "64k", str(folder / "_full.mp4")])
    _truncate(folder / "_full.mp4", folder / "truncated-moov-last.mp4", 0.5)
    add("truncated-moov-last.mp4", "error")
    # mp4 with its index first: the index promises samples the file no longer has.
    ffmpeg([*_sine(440, 44100, 2.0), "-c:a", "aac", "-b:a", "64k", "-movflags", "+faststart", str(folder / "_fs.m4a")])
    _truncate(folder / "_fs.m4a", folder / "truncated-faststart.m4a", 0.6)
    add("truncated-faststart.m4a", "either", duration_s=2.0)

    # --- layouts, sample formats and rates that must all come out as 16 kHz mono ----------------
    ffmpeg(
        [
            *_sine(440, 44100, 1.0),
            *_sine(440, 44100, 1.0),
            "-filter_complex",
            "[0:a][1:a]join=inputs=2:channel_layout=stereo",
            "-c:a",
            "pcm_s16le",
            str(folder / "stereo.wav"),
        ]
    )
    add("stereo.wav", "audio", duration_s=1.0, tone_hz=440)
    ffmpeg(
        [
            "-f",
            "lavfi",
            "-i",
            "aevalsrc=0.3*sin(2*PI*440*t)|0.3*sin(2*PI*440*t)|0.3*sin(2*PI*440*t)|0|0.3*sin(2*PI*440*t)|"
            "0.3*sin(2*PI*440*t):channel_layout=5.1:sample_rate=48000:duration=1",
            "-c:a",
            "flac",
            str(folder / "surround-5.1.flac"),
        ]
    )
    add("surround-5.1.flac", "audio", duration_s=1.0, tone_hz=440)
    ffmpeg([*_sine(440, 16000, 1.0), "-c:a", "pcm_u8", str(folder / "8bit.wav")])
    add("8bit.wav", "audio", duration_s=1.0, tone_hz=440)
    ffmpeg([*_sine(440, 48000, 1.0), "-c:a", "pcm_s24le", str(folder / "24bit.wav")])
    add("24bit.wav", "audio", duration_s=1.0, tone_hz=440)
    ffmpeg([*_sine(440, 22050, 1.0), "-c:a", "pcm_f32le", str(folder / "float32.wav")])
    add("float32.wav", "audio", duration_s=1.0, tone_hz=440)
    # Float samples far outside [-1, 1] (legal in a float WAV): the decoder must clip, not pass them on.
    t = np.arange(16000, dtype=np.float64) / 16000
    loud = (4.0 * np.sin(2 * np.pi * 440 * t)).astype("<f4")
    ffmpeg(
        ["-f", "f32le", "-ar", "16000", "-ac", "1", "-i", "pipe:0", "-c:a", "pcm_f32le", str(folder / "loud.wav")],
        stdin=loud.tobytes(),
    )
    add("loud.wav", "audio", duration_s=1.0, tone_hz=440)
    ffmpeg([*_sine(440, 8000, 1.0), "-c:a", "pcm_s16le", str(folder / "8khz.wav")])
    add("8khz.wav", "audio", duration_s=1.0, tone_hz=440)
    ffmpeg([*_sine(440, 96000, 1.0), "-c:a", "flac", str(folder / "96khz.flac")])
    add("96khz.flac", "audio", duration_s=1.0, tone_hz=440)
    # A FLAC file under an mp3 name: the container is probed, not guessed from the extension.
    (folder / "flac-named.mp3").write_bytes((folder / "96khz.flac").read_bytes())
    add("flac-named.mp3", "audio", duration_s=1.0, tone_hz=440)
    odd = folder / "odd name — é 日本.wav"
    ffmpeg([*_sine(440, 16000, 0.5), "-c:a", "pcm_s16le", str(odd)])
    add(odd.name, "audio", duration_s=0.5, tone_hz=440)

    # --- content a speech pipeline must survive ------------------------------------------------------
    ffmpeg(
        ["-f", "lavfi", "-i", "anullsrc=channel_layout=mono:sample_rate=16000", "-t", "2", str(folder / "silence.flac")]
    )
    add("silence.flac", "audio", duration_s=2.0, silent=True)
    noise = rng.uniform(-1.0, 1.0, 2 * 16000)
    ffmpeg(
        ["-f", "f64le", "-ar", "16000", "-ac", "1", "-i", "pipe:0", "-c:a", "pcm_s16le", str(folder / "noise.wav")],
        stdin=noise.astype("<f8").tobytes(),
    )
    add("noise.wav", "audio", duration_s=2.0)
    ffmpeg(
        [
            "-f",
            "lavfi",
            "-i",
            "aevalsrc=(0.2*sin(2*PI*261.6*t)+0.2*sin(2*PI*329.6*t)+0.15*sin(2*PI*392*t))*(0.6+0.4*sin(2*PI*2*t))"
            ":sample_rate=48000:duration=3",
            "-c:a",
            "libopus",
            "-b:a",
            "64k",
            str(folder / "music.ogg"),
        ]
    )
    add("music.ogg", "audio", duration_s=3.0, tolerance_s=0.1)

    # --- video containers -------------------------------------------------------------------------
    video = ["-f", "lavfi", "-i", "testsrc=size=160x120:rate=10:duration=2"]
    ffmpeg(
        [
            *video,
            *_sine(440, 44100, 2.0),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
            "-shortest",
            str(folder / "video-with-audio.mp4"),
        ]
    )
    add("video-with-audio.mp4", "audio", duration_s=2.0, tolerance_s=0.1, tone_hz=440)
    ffmpeg([*video, "-c:v", "libx264", "-preset", "ultrafast", "-an", str(folder / "video-no-audio.mp4")])
    add("video-no-audio.mp4", "error")
    ffmpeg([*video, *_sine(440, 48000, 2.0), "-c:v", "mpeg4", "-c:a", "flac", str(folder / "video-with-audio.mkv")])
    add("video-with-audio.mkv", "audio", duration_s=2.0, tolerance_s=0.1, tone_hz=440)

    for helper in folder.glob("_*"):
        helper.unlink()
    return {c.name: c for c in cases}


def make_long_silence(path: Path, seconds: float) -> Path:
    """A long mono 44.1 kHz FLAC of silence: tiny on disk, ``seconds`` long (and resampled) when decoded."""
    ffmpeg(["-f", "lavfi", "-i", "anullsrc=channel_layout=mono:sample_rate=44100", "-t", str(seconds), str(path)])
    return path


def make_speech(path: Path, sentences: Sequence[str], *, gap_s: float = 0.8, lead_s: float = 0.5) -> Path:
    """espeak-ng ``sentences`` separated by ``gap_s`` of silence, as a 16 kHz mono WAV at ``path``."""
    if ESPEAK is None:
        raise RuntimeError("espeak-ng is not installed (Debian package espeak-ng)")
    parts = [np.zeros(int(lead_s * 16000), dtype=np.int16)]
    for i, text in enumerate(sentences):
        raw = path.with_name(f"_{path.stem}-{i}.wav")
        subprocess.run([ESPEAK, "-v", "en-us", "-s", "165", "-w", str(raw), text], check=True, timeout=60)
        resampled = path.with_name(f"_{path.stem}-{i}-16k.raw")
        ffmpeg(["-i", str(raw), "-ar", "16000", "-ac", "1", "-f", "s16le", str(resampled)])
        parts.append(np.frombuffer(resampled.read_bytes(), dtype="<i2"))
        parts.append(np.zeros(int(gap_s * 16000), dtype=np.int16))
        raw.unlink()
        resampled.unlink()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.concatenate(parts).astype("<i2").tobytes())
    return path
