"""Build a dev episode: one MELD train/dev episode's lines, spoken by espeak-ng, at MELD's own pace.

Lines are taken in MELD's time order for one ``--season``/``--episode`` of the ``--split`` CSV, one
espeak-ng voice per character (a voice variant and pitch drawn per name). Each line starts after the
previous one's synthetic end plus the *gap MELD records between them* (clipped to 0.05-3 s): the
speech lengths are the synthesiser's, the turn-taking rhythm is the show's (median gap ~0.17 s, many
turns under 0.5 s). Lines without words are skipped.

Writes into ``--out`` (default ``bench/results/episodes``, git-ignored: nothing made from MELD may be
committed) ``NAME.wav`` and ``NAME.csv`` (``start_s,end_s,text,emotion,speaker``, the plain truth format
of ``emostream evaluate`` with its speaker column). The audio is synthetic: it tests segmentation at
turn boundaries and the text branch, not vocal emotion, and a GE2E encoder hears espeak-ng voices as
nearly one speaker (report speaker figures on it, but do not tune on them).

Usage: ``python -m bench.make_episode --split dev --season 1 --episode 1 [--max-lines 80]``.
"""

from __future__ import annotations

import argparse
import csv
import logging
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.common import REPO, setup_logging
from bench.make_dialogue import Turn, write_truth, write_wav
from bench.make_testset import synthesize
from stream.evaluation.truth import parse_timestamp
from stream.protocol import LABELS

__all__ = ["main"]

logger = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 16000
MELD_DIR = REPO.parent / "shared" / "data" / "meld"
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")


def episode_rows(path: Path, season: int, episode: int) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["Season"] == str(season) and r["Episode"] == str(episode)]
    if not rows:
        raise ValueError(f"{path} has no lines for season {season} episode {episode}")
    return sorted(rows, key=lambda r: (parse_timestamp(r["StartTime"]), parse_timestamp(r["EndTime"])))


def speak_episode(rows: Sequence[dict[str, str]], split: str, seed: int,
                  ) -> tuple[np.ndarray, list[Turn], dict[str, tuple[str, int, int]]]:  # fmt: skip
    """Speak the episode's lines at their MELD times (gaps clipped to 0.05-3 s), one espeak-ng voice per
    character; the audio, the turns as truth rows, and the voices."""
    rng = random.Random(seed)
    voices: dict[str, tuple[str, int, int]] = {}
    parts: list[np.ndarray] = [np.zeros(int(0.5 * SAMPLE_RATE_HZ), np.float32)]
    cursor = parts[0].size
    turns: list[Turn] = []
    prev_end_meld: float | None = None
    for row in rows:
        text = " ".join(row["Utterance"].replace("\x92", "'").split())
        emotion = row["Emotion"].strip().lower()
        if not any(c.isalpha() for c in text) or emotion not in LABELS:
            continue
        who = row["Speaker"].strip() or "?"
        if who not in voices:
            voices[who] = (f"en-us+{rng.choice(VARIANTS)}", rng.randint(25, 75), rng.randint(150, 185))
        voice, pitch, wpm = voices[who]
        start_meld, end_meld = parse_timestamp(row["StartTime"]), parse_timestamp(row["EndTime"])
        gap = 0.5 if prev_end_meld is None else min(3.0, max(0.05, start_meld - prev_end_meld))
        prev_end_meld = end_meld
        silence = np.zeros(int(gap * SAMPLE_RATE_HZ), np.float32)
        parts.append(silence)
        cursor += silence.size
        speech = synthesize(text, voice=voice, speed_wpm=wpm, pitch=pitch)
        if speech.size == 0:
            continue
        parts.append(speech.astype(np.float32) * 0.5)
        turns.append(
            Turn(
                round(cursor / SAMPLE_RATE_HZ, 3),
                round((cursor + speech.size) / SAMPLE_RATE_HZ, 3),
                text,
                emotion,
                who,
                f"{split}/dia{row['Dialogue_ID']}_utt{row['Utterance_ID']}",
            )
        )
        cursor += speech.size
    parts.append(np.zeros(SAMPLE_RATE_HZ, np.float32))
    audio = np.concatenate(parts)
    audio = audio + np.random.default_rng(seed).normal(0, 3e-4, audio.size).astype(np.float32)
    return audio, turns, voices


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--split", choices=("train", "dev"), default="dev", help="never the test split")
    parser.add_argument("--season", type=int, required=True)
    parser.add_argument("--episode", type=int, required=True)
    parser.add_argument("--max-lines", type=int, default=0, help="the first N lines only (0 = all)")
    parser.add_argument("--meld-dir", type=Path, default=MELD_DIR)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "episodes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    setup_logging()
    rows = episode_rows(args.meld_dir / f"{args.split}_sent_emo.csv", args.season, args.episode)
    if args.max_lines:
        rows = rows[: args.max_lines]
    audio, turns, voices = speak_episode(rows, args.split, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"meld-{args.split}-s{args.season:02d}e{args.episode:02d}"
    write_wav(args.out / f"{name}.wav", audio)
    write_truth(args.out / f"{name}.csv", turns)
    gaps = [b.start_s - a.end_s for a, b in zip(turns, turns[1:], strict=False)]
    changes = sum(1 for a, b in zip(turns, turns[1:], strict=False) if a.speaker != b.speaker)
    print(
        f"{args.out / name}.wav: {len(turns)} lines, {len(voices)} voices, {audio.size / SAMPLE_RATE_HZ:.0f} s, "
        f"median gap {float(np.median(gaps)):.2f} s, {changes} speaker changes"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
