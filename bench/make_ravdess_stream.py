"""Build dev streams of real emotional voices with neutral words: held-out RAVDESS actors back to back.

Each clip of the chosen actors (default 17-20, never trained on) is cut to its speech (energy-based,
:func:`training.asr_features.speech_span`) and placed on one timeline after a random 0.7-1.6 s gap, in
a seeded shuffled order (actors interleaved, like turns). One stream is written per background noise
level (pink noise at a fixed dBFS, or none), all with the same timeline, so accuracy can be compared
across levels. Writes into ``--out`` (default ``bench/results/ravdess_stream``, ignored by git: no corpus
audio is ever committed)::

    stream-clean.wav, stream-n55.wav, stream-n45.wav   16 kHz mono 16-bit
    truth.csv        start_s,end_s,text,emotion,speaker (``emostream evaluate``'s plain truth format; the
                     speaker is the actor, so the evaluation also scores the speaker labels)
    manifest.json    per row: the clip file, its label, actor; the noise levels

Calm is scored as neutral (7 MELD classes). Usage:
``python -m bench.make_ravdess_stream [--actors 17 18 19 20] [--noise-dbfs none -55 -45] [--seed 0]``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import random
import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from training.asr_features import ENCODER_FRAME_SAMPLES, speech_span
from training.audio import load_audio
from training.augment import coloured_noise
from training.corpora import load_ravdess
from training.data import LABELS

__all__ = ["build_stream", "main", "write_wav"]

logger = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 16000
REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "bench" / "results" / "ravdess_stream"
DEFAULT_RAVDESS = REPO.parent / "shared" / "data" / "ravdess"
LEAD_S = 1.0  # silence before the first clip


def write_wav(path: Path, audio: np.ndarray) -> None:
    pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE_HZ)
        w.writeframes(pcm.tobytes())


def build_stream(
    clips: Sequence[tuple[str, np.ndarray]], *, seed: int = 0, gap_s: tuple[float, float] = (0.7, 1.6)
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Speech of each clip one after another with random gaps; returns (audio, [(start_s, end_s)])."""
    rng = random.Random(seed)
    pieces = [np.zeros(int(LEAD_S * SAMPLE_RATE_HZ), dtype=np.float32)]
    spans = []
    pos = pieces[0].size
    for _, audio in clips:
        first, end = speech_span(audio, margin_frames=1)
        speech = audio[first * ENCODER_FRAME_SAMPLES : end * ENCODER_FRAME_SAMPLES]
        spans.append((pos / SAMPLE_RATE_HZ, (pos + speech.size) / SAMPLE_RATE_HZ))
        gap = np.zeros(int(rng.uniform(*gap_s) * SAMPLE_RATE_HZ), dtype=np.float32)
        pieces += [speech, gap]
        pos += speech.size + gap.size
    return np.concatenate(pieces), spans


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.make_ravdess_stream", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ravdess-dir", default=str(DEFAULT_RAVDESS))
    parser.add_argument("--actors", type=int, nargs="+", default=[17, 18, 19, 20])
    parser.add_argument("--per-actor", type=int, default=0, help="clips per actor (0 = all 60)")
    parser.add_argument("--noise-dbfs", nargs="+", default=["none", "-55", "-45"], help="pink-noise levels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    speakers = {f"ravdess{a:02d}" for a in args.actors}
    examples = [e for e in load_ravdess(args.ravdess_dir) if e.speaker in speakers]
    if not examples:
        parser.error(f"no RAVDESS clips of actors {args.actors} under {args.ravdess_dir}")
    rng = random.Random(args.seed)
    if args.per_actor:
        chosen = []
        for spk in sorted(speakers):
            mine = [e for e in examples if e.speaker == spk]
            rng.shuffle(mine)
            chosen += mine[: args.per_actor]
        examples = chosen
    rng.shuffle(examples)
    clips = [(str(e.audio_path), load_audio(str(e.audio_path))) for e in examples]
    audio, spans = build_stream(clips, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    levels = []
    for level in args.noise_dbfs:
        name = "stream-clean" if level == "none" else f"stream-n{abs(int(float(level)))}"
        noisy = audio.copy()
        if level != "none":
            noise_rng = np.random.default_rng(args.seed + 1)
            noisy += np.float32(10.0 ** (float(level) / 20.0)) * coloured_noise(noisy.size, "pink", noise_rng)
        write_wav(out / f"{name}.wav", noisy)
        levels.append({"file": f"{name}.wav", "noise_dbfs": None if level == "none" else float(level)})
    with (out / "truth.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["start_s", "end_s", "text", "emotion", "speaker"])
        for e, (s, t) in zip(examples, spans, strict=True):
            said = "Kids are talking by the door." if e.uid.split("-")[4] == "01" else "Dogs are sitting by the door."
            w.writerow([f"{s:.3f}", f"{t:.3f}", said, LABELS[e.label], e.speaker])
    manifest = {
        "actors": args.actors, "seed": args.seed, "calm": "neutral", "streams": levels,
        "duration_s": round(audio.size / SAMPLE_RATE_HZ, 2),
        "rows": [{"clip": Path(e.audio_path or "").name, "label": LABELS[e.label], "actor": e.speaker,
                  "start_s": round(s, 3), "end_s": round(t, 3)} for e, (s, t) in zip(examples, spans, strict=True)],
    }  # fmt: skip
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    logger.info(
        "wrote %d clips (%.0f s) x %d noise levels to %s", len(examples), audio.size / SAMPLE_RATE_HZ, len(levels), out
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
