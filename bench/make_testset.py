"""Build a replay test set: MELD dev utterances spoken by espeak-ng on one timeline with gaps.

The audio is synthetic (text-to-speech), so it tells us about segmentation, ASR on clean speech and
the text branch; it carries no real vocal emotion (voice, speed and pitch vary a little with the label
only so the audio is not uniform). Writes, into ``--out`` (default ``bench/results/testset``, which git
ignores: MELD text and audio made from it must never be committed)::

    testset.wav     16 kHz mono 16-bit speech with silence between utterances
    truth.csv       start_s,end_s,text,emotion (the plain truth format of ``emostream evaluate``)
    testset.mp4     the same audio with a test-pattern video track (``--mp4``)
    manifest.json   where each line came from and how it was voiced

Usage: ``python -m bench.make_testset [--n 20] [--seed 0] [--mp4]``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import random
import shutil
import subprocess
import tempfile
import wave
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stream.protocol import LABELS
from stream.records import SAMPLE_RATE_HZ
from training.audio import load_audio

__all__ = ["Line", "TestSet", "build_testset", "main", "meld_lines", "synthesize", "write_testset"]

logger = logging.getLogger(__name__)

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "testset"
DEFAULT_MELD_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "meld"

# A small, audible nudge per label (espeak-ng words/minute, pitch 0-99). Not acted emotion.
VOICE_BY_EMOTION: dict[str, tuple[int, int]] = {
    "anger": (180, 45),
    "disgust": (145, 40),
    "fear": (175, 70),
    "joy": (175, 65),
    "neutral": (160, 50),
    "sadness": (130, 35),
    "surprise": (165, 75),
}
VOICES = ("en-us", "en")


@dataclass(frozen=True, slots=True)
class Line:
    text: str
    emotion: str | None = None
    source: str = ""  # e.g. "meld-dev/dia3_utt1"
    speaker: str = ""


@dataclass(frozen=True, slots=True)
class TestSet:
    wav: Path
    truth_csv: Path
    mp4: Path | None
    manifest: Path
    duration_s: float
    n_utterances: int


def synthesize(text: str, *, voice: str = "en-us", speed_wpm: int = 160, pitch: int = 50) -> np.ndarray:
    """espeak-ng speech as float32 mono 16 kHz with its leading and trailing silence trimmed."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory(prefix="emostream-tts-") as tmp:
        out = Path(tmp) / "s.wav"
        # "--" so a line starting with "-" is text, not an option.
        cmd = ["espeak-ng", "-v", voice, "-s", str(speed_wpm), "-p", str(pitch), "-w", str(out), "--", text]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"espeak-ng failed on {text!r}: {proc.stderr.strip()}")
        audio = load_audio(out, sample_rate_hz=SAMPLE_RATE_HZ)
    voiced = np.flatnonzero(np.abs(audio) > 0.01)
    return audio[voiced[0] : voiced[-1] + 1] if voiced.size else audio[:0]


def meld_lines(
    meld_dir: Path, *, split: str = "dev", n: int = 20, seed: int = 0, min_words: int = 3, max_words: int = 25
) -> list[Line]:
    """``n`` MELD utterances of ``split`` with ``min_words``..``max_words`` words, sampled with ``seed``."""
    path = Path(meld_dir) / f"{split}_sent_emo.csv"
    if not path.is_file():
        raise FileNotFoundError(f"MELD annotations not found: {path} (see ../shared/data/README.md)")
    with path.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    pool = []
    for row in rows:
        text = " ".join(row["Utterance"].split())
        if min_words <= len(text.split()) <= max_words and any(c.isalpha() for c in text):
            uid = f"meld-{split}/dia{row['Dialogue_ID']}_utt{row['Utterance_ID']}"
            emotion = row["Emotion"].strip().lower()
            if emotion not in LABELS:
                raise ValueError(f"{path}: {uid} has an unknown emotion {emotion!r}")
            pool.append(Line(text, emotion, uid, row.get("Speaker", "")))
    if len(pool) < n:
        raise ValueError(f"{path} has only {len(pool)} utterances of {min_words}-{max_words} words; asked for {n}")
    return random.Random(seed).sample(pool, n)


def _write_wav(path: Path, audio: np.ndarray) -> None:
    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as wf:
        wf.setnchannels(1)
        wf.setsampwidth(2)
        wf.setframerate(SAMPLE_RATE_HZ)
        wf.writeframes(pcm.tobytes())


def _mp4(path: Path, wav: Path) -> None:
    if shutil.which("ffmpeg") is None:
        raise RuntimeError("ffmpeg is not installed (apt-get install ffmpeg)")
    cmd = ["ffmpeg", "-y", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=15",
           "-i", str(wav), "-shortest", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac",
           "-ar", "44100", "-ac", "2", str(path)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg could not write {path}: {proc.stderr.strip()}")


def write_testset(  # noqa: PLR0913 - the test set's knobs, one per command-line flag
    lines: Sequence[Line],
    out_dir: Path,
    *,
    seed: int = 0,
    lead_s: float = 1.0,
    gap_s: tuple[float, float] = (1.0, 2.0),
    tail_s: float = 1.5,
    voice_by_emotion: bool = True,
    noise: float = 0.0,
    mp4: bool = False,
) -> TestSet:
    """Speak ``lines`` one after another with random gaps in ``gap_s`` and write the test set files.

    Truth spans are where the (trimmed) speech of each line lies, written to 10 µs (under a sample).
    """
    if not lines:
        raise ValueError("no lines to speak")
    if gap_s[0] > gap_s[1] or gap_s[0] < 0:
        raise ValueError(f"gap_s must be (low, high) with 0 <= low <= high, got {gap_s}")
    out_dir.mkdir(parents=True, exist_ok=True)
    audio, rows, manifest = _speak(lines, random.Random(seed), lead_s, gap_s, tail_s, voice_by_emotion=voice_by_emotion)
    if noise:
        audio = audio + np.random.default_rng(seed).normal(0.0, noise, audio.size).astype(np.float32)
    wav = out_dir / "testset.wav"
    _write_wav(wav, audio)
    truth = out_dir / "truth.csv"
    with truth.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["start_s", "end_s", "text", "emotion"])
        writer.writerows((f"{a:.5f}", f"{b:.5f}", text, emo) for a, b, text, emo in rows)
    mp4_path = None
    if mp4:
        mp4_path = out_dir / "testset.mp4"
        _mp4(mp4_path, wav)
    duration = audio.size / SAMPLE_RATE_HZ
    info = {
        "note": "speech is espeak-ng text-to-speech of the listed texts, not recorded or acted speech",
        "duration_s": duration,
        "seed": seed,
        "gap_s": list(gap_s),
        "noise": noise,
        "utterances": manifest,
    }
    manifest_path = out_dir / "manifest.json"
    manifest_path.write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    logger.info("test set: %d utterances, %.1f s of audio in %s", len(rows), duration, out_dir)
    return TestSet(wav, truth, mp4_path, manifest_path, duration, len(rows))


def _speak(
    lines: Sequence[Line],
    rng: random.Random,
    lead_s: float,
    gap_s: tuple[float, float],
    tail_s: float,
    *,
    voice_by_emotion: bool,
) -> tuple[np.ndarray, list[tuple[float, float, str, str]], list[dict[str, Any]]]:
    """The lines spoken one after another: the audio, each line's truth row, and what voiced it."""
    pieces = [np.zeros(round(lead_s * SAMPLE_RATE_HZ), np.float32)]
    pos = pieces[0].size
    rows: list[tuple[float, float, str, str]] = []
    manifest: list[dict[str, Any]] = []
    for k, line in enumerate(lines):
        speed, pitch = VOICE_BY_EMOTION.get(line.emotion or "", (160, 50)) if voice_by_emotion else (160, 50)
        voice = VOICES[zlib.crc32(line.speaker.encode()) % len(VOICES)] if line.speaker else VOICES[0]
        speech = synthesize(line.text, voice=voice, speed_wpm=speed, pitch=pitch)
        if speech.size == 0:
            logger.warning("espeak-ng produced no audible speech for %r; line skipped", line.text)
            continue
        start, end = pos, pos + speech.size
        rows.append((start / SAMPLE_RATE_HZ, end / SAMPLE_RATE_HZ, line.text, line.emotion or ""))
        manifest.append({**asdict(line), "voice": voice, "speed_wpm": speed, "pitch": pitch})
        gap = tail_s if k == len(lines) - 1 else rng.uniform(*gap_s)
        pieces += [speech, np.zeros(round(gap * SAMPLE_RATE_HZ), np.float32)]
        pos = end + pieces[-1].size
    return np.concatenate(pieces), rows, manifest


def build_testset(
    out_dir: Path = DEFAULT_OUT,
    *,
    n: int = 20,
    seed: int = 0,
    split: str = "dev",
    meld_dir: Path = DEFAULT_MELD_DIR,
    mp4: bool = False,
    voice_by_emotion: bool = True,
) -> TestSet:
    """MELD ``split`` utterances -> a spoken test set in ``out_dir`` (reused when already built alike)."""
    key = {"n": n, "seed": seed, "split": split, "mp4": mp4, "voice_by_emotion": voice_by_emotion}
    stamp = out_dir / "build.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == key:
        info = json.loads((out_dir / "manifest.json").read_text())
        mp4_path = out_dir / "testset.mp4" if mp4 else None
        return TestSet(out_dir / "testset.wav", out_dir / "truth.csv", mp4_path, out_dir / "manifest.json",
                       info["duration_s"], len(info["utterances"]))  # fmt: skip
    lines = meld_lines(meld_dir, split=split, n=n, seed=seed)
    ts = write_testset(lines, out_dir, seed=seed, mp4=mp4, voice_by_emotion=voice_by_emotion)
    stamp.write_text(json.dumps(key) + "\n")
    return ts


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.make_testset", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--n", type=int, default=20, help="number of utterances (default 20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="dev", choices=("train", "dev", "test"))
    p.add_argument("--meld-dir", type=Path, default=DEFAULT_MELD_DIR)
    p.add_argument("--mp4", action="store_true", help="also write an mp4 with a video track")
    p.add_argument("--same-voice", action="store_true", help="do not vary speed/pitch with the emotion label")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.n < 1:
        p.error("--n must be at least 1")
    try:
        ts = build_testset(args.out, n=args.n, seed=args.seed, split=args.split, meld_dir=args.meld_dir,
                           mp4=args.mp4, voice_by_emotion=not args.same_voice)  # fmt: skip
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"make_testset: {exc}")
        return 1
    print(f"{ts.n_utterances} utterances, {ts.duration_s:.1f} s (espeak-ng TTS)")
    for path in (ts.wav, ts.truth_csv, ts.mp4, ts.manifest):
        if path is not None:
            print(f"  {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
