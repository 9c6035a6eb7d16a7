"""Build real-voice multi-speaker dialogues from RAVDESS actors and EmoDB speakers, with a truth CSV.

Each dialogue puts ``--speakers`` (default 4) people on one timeline taking turns: every turn is one
acted clip trimmed to its voiced part (1-2.5 s), no speaker twice in a row, separated by short gaps,
with light white noise over the whole recording. Speakers are drawn from a *split* so that the
clustering is tuned on some voices and measured on others:

* ``dev``: RAVDESS actors 1-12, EmoDB speakers 03, 08, 09, 10, 11
* ``test``: RAVDESS actors 13-20, EmoDB speakers 12, 13, 14, 15, 16

Writes into ``--out`` (default ``bench/results/dialogues/SPLIT``; git ignores ``bench/results``:
nothing made from the corpora may be committed), per dialogue ``NAME.wav`` (16 kHz mono 16-bit) and
``NAME.csv`` with ``start_s,end_s,text,emotion,speaker`` -- the plain truth format of
``emostream evaluate`` plus its speaker column -- and one ``manifest.json``.

Usage: ``python -m bench.make_dialogue --split test --n 10 [--seed 0] [--gap-ms 150 600] [--snr-db 30]``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import random
import wave
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bench.common import REPO, setup_logging
from training.audio import load_audio
from training.corpora import load_emodb, load_ravdess
from training.data import LABELS

__all__ = ["Clip", "Turn", "build_dialogue", "clips_by_speaker", "main", "trim_voiced"]

logger = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 16000
DATA = REPO.parent / "shared" / "data"
SPLITS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "dev": (tuple(range(1, 13)), (3, 8, 9, 10, 11)),
    "test": (tuple(range(13, 21)), (12, 13, 14, 15, 16)),
}
RAVDESS_TEXT = {"01": "Kids are talking by the door.", "02": "Dogs are sitting by the door."}
EMODB_TEXT = {
    "a01": "Der Lappen liegt auf dem Eisschrank.",
    "a02": "Das will sie am Mittwoch abgeben.",
    "a04": "Heute abend könnte ich es ihm sagen.",
    "a05": "Das schwarze Stück Papier befindet sich da oben neben dem Holzstück.",
    "a07": "In sieben Stunden wird es soweit sein.",
    "b01": "Was sind denn das für Tüten, die da unter dem Tisch stehen?",
    "b02": "Sie haben es gerade hochgetragen und jetzt gehen sie wieder runter.",
    "b03": "An den Wochenenden bin ich jetzt immer nach Hause gefahren und habe Agnes besucht.",
    "b09": "Ich will das eben wegbringen und dann mit Karl was trinken gehen.",
    "b10": "Die wird auf dem Platz sein, wo wir sie immer hinlegen.",
}


@dataclass(frozen=True, slots=True)
class Clip:
    path: str
    speaker: str
    emotion: str
    text: str


@dataclass(frozen=True, slots=True)
class Turn:
    start_s: float
    end_s: float
    text: str
    emotion: str
    speaker: str
    source: str


def trim_voiced(wav: np.ndarray, *, frame: int = 480, floor_db: float = -35.0) -> np.ndarray:
    """``wav`` from its first to its last frame within ``-floor_db`` dB of its loudest frame."""
    n = wav.size // frame
    if n == 0:
        return wav
    energy = np.sqrt(np.mean(wav[: n * frame].reshape(n, frame) ** 2, axis=1)) + 1e-9
    loud = np.nonzero(20 * np.log10(energy / energy.max()) > floor_db)[0]
    if loud.size == 0:
        return wav
    return wav[loud[0] * frame : (loud[-1] + 1) * frame]


def clips_by_speaker(split: str, data: Path = DATA) -> dict[str, list[Clip]]:
    """The split's clips per speaker (``ravdess07``, ``emodb03``); RAVDESS calm counts as neutral."""
    actors, emodb_speakers = SPLITS[split]
    out: dict[str, list[Clip]] = {}
    for ex in load_ravdess(data / "ravdess"):
        if int(ex.speaker[-2:]) in actors:
            text = RAVDESS_TEXT.get(Path(ex.audio_path or "").stem.split("-")[4], "")
            out.setdefault(ex.speaker, []).append(Clip(ex.audio_path or "", ex.speaker, LABELS[ex.label], text))
    for ex in load_emodb(data / "emodb"):
        if int(ex.speaker[-2:]) in emodb_speakers:
            text = EMODB_TEXT.get(Path(ex.audio_path or "").stem[2:5], "")
            out.setdefault(ex.speaker, []).append(Clip(ex.audio_path or "", ex.speaker, LABELS[ex.label], text))
    return out


def build_dialogue(
    pool: dict[str, list[Clip]],
    *,
    rng: random.Random,
    n_speakers: int = 4,
    turns: int = 40,
    gap_ms: tuple[int, int] = (150, 600),
    snr_db: float = 30.0,
    min_s: float = 1.0,
    max_s: float = 2.5,
) -> tuple[np.ndarray, list[Turn]]:
    """One dialogue: audio and its turns. Clips outside ``[min_s, max_s]`` once trimmed are skipped."""
    speakers = rng.sample(sorted(pool), n_speakers)
    decks = {s: rng.sample(pool[s], len(pool[s])) for s in speakers}
    parts: list[np.ndarray] = [np.zeros(int(0.5 * SAMPLE_RATE_HZ), np.float32)]
    cursor = parts[0].size
    out: list[Turn] = []
    previous = ""
    while len(out) < turns:
        who = rng.choice([s for s in speakers if s != previous])
        while decks[who]:
            clip = decks[who].pop()
            wav = trim_voiced(load_audio(clip.path))
            if min_s <= wav.size / SAMPLE_RATE_HZ <= max_s:
                break
        else:
            raise ValueError(f"speaker {who} ran out of clips of {min_s}-{max_s} s")
        # The speakers talk at their own level: +-6 dB around -23 dBFS.
        level = 10 ** ((-23 + rng.uniform(-6, 6)) / 20) / (float(np.sqrt(np.mean(wav**2))) + 1e-9)
        parts.append((wav * level).astype(np.float32))
        out.append(
            Turn(
                round(cursor / SAMPLE_RATE_HZ, 3),
                round((cursor + wav.size) / SAMPLE_RATE_HZ, 3),
                clip.text,
                clip.emotion,
                who,
                Path(clip.path).name,
            )
        )
        cursor += wav.size
        gap = np.zeros(int(rng.uniform(*gap_ms) / 1000 * SAMPLE_RATE_HZ), np.float32)
        parts.append(gap)
        cursor += gap.size
        previous = who
    parts.append(np.zeros(int(0.8 * SAMPLE_RATE_HZ), np.float32))
    audio = np.concatenate(parts)
    noise_rms = 10 ** ((-23 - snr_db) / 20)
    audio = audio + np.random.default_rng(rng.randrange(2**32)).normal(0, noise_rms, audio.size).astype(np.float32)
    return np.clip(audio, -1, 1).astype(np.float32), out


def write_wav(path: Path, audio: np.ndarray) -> None:
    with wave.open(str(path), "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(SAMPLE_RATE_HZ)
        fh.writeframes((audio * 32767).astype("<i2").tobytes())


def write_truth(path: Path, turns: Sequence[Turn]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["start_s", "end_s", "text", "emotion", "speaker"])
        for t in turns:
            w.writerow([t.start_s, t.end_s, t.text, t.emotion, t.speaker])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--split", choices=sorted(SPLITS), default="dev")
    parser.add_argument("--n", type=int, default=10, help="dialogues to make (default 10)")
    parser.add_argument("--speakers", type=int, default=4)
    parser.add_argument("--turns", type=int, default=40, help="turns per dialogue (default 40)")
    parser.add_argument("--gap-ms", type=int, nargs=2, default=(150, 600), metavar=("MIN", "MAX"))
    parser.add_argument("--snr-db", type=float, default=30.0, help="speech level over the white noise (default 30)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder (ravdess/, emodb/)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    setup_logging()
    if not (args.data / "ravdess").is_dir() or not (args.data / "emodb").is_dir():
        parser.error(f"RAVDESS and EmoDB are needed under {args.data}")
    out = args.out or REPO / "bench" / "results" / "dialogues" / args.split
    out.mkdir(parents=True, exist_ok=True)
    pool = clips_by_speaker(args.split, args.data)
    manifest = []
    for k in range(args.n):
        rng = random.Random(f"{args.seed}-{args.split}-{k}")
        audio, turns = build_dialogue(
            pool, rng=rng, n_speakers=args.speakers, turns=args.turns, gap_ms=tuple(args.gap_ms), snr_db=args.snr_db
        )
        name = f"{args.split}{k:02d}"
        write_wav(out / f"{name}.wav", audio)
        write_truth(out / f"{name}.csv", turns)
        manifest.append(
            {"name": name, "audio_s": round(audio.size / SAMPLE_RATE_HZ, 2), "turns": [asdict(t) for t in turns]}
        )
        logger.info(
            "%s: %d turns, %.1f s, speakers %s",
            name,
            len(turns),
            audio.size / SAMPLE_RATE_HZ,
            sorted({t.speaker for t in turns}),
        )
    (out / "manifest.json").write_text(
        json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "dialogues": manifest}, indent=1) + "\n"
    )
    print(f"{args.n} dialogues in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
