"""RAVDESS, EmoDB and GoEmotions loaders, in the layouts users download, mapped to the 7 MELD labels.

* RAVDESS ``03-01-EE-II-SS-RR-AA.wav|flac`` (any folder depth, e.g. ``Actor_01/``): emotion EE 01
  neutral, 02 calm, 03 happy -> joy, 04 sad -> sadness, 05 angry -> anger, 06 fearful -> fear,
  07 disgust, 08 surprised -> surprise. **Calm has no MELD label: it becomes neutral by default**
  (``calm_as_neutral = false`` drops calm clips instead). Speaker = actor.
* EmoDB ``SSTTTEV.wav|flac``: speaker SS, emotion letter E: W anger, E disgust, A fear, F joy,
  T sadness, N neutral. **Boredom (L) has no MELD label and is dropped.** EmoDB has no surprise.
* GoEmotions relabelled to Ekman (``goemotions_ekman/{train,dev,test}.tsv`` + ``labels.txt``):
  rows with exactly one label are kept (multi-label rows are ambiguous for a single-label head).

Splits are by speaker: :func:`split_by_speaker` never puts one speaker on both sides.
"""

from __future__ import annotations

import csv
import logging
import random
from collections.abc import Iterable, Sequence
from pathlib import Path

from training.data import LABELS, Example

__all__ = ["at_most_per_class", "load_emodb", "load_goemotions", "load_ravdess", "split_by_speaker"]

logger = logging.getLogger(__name__)

AUDIO_EXTS = (".wav", ".flac")
RAVDESS_EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "joy",
    "04": "sadness",
    "05": "anger",
    "06": "fear",
    "07": "disgust",
    "08": "surprise",
}
EMODB_EMOTIONS = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "joy", "T": "sadness", "N": "neutral"}


def _audio_files(root: Path) -> list[Path]:
    if not root.is_dir():
        raise FileNotFoundError(f"corpus folder not found: {root}")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTS and p.is_file())


def load_ravdess(root: str | Path, *, calm_as_neutral: bool = True) -> list[Example]:
    """RAVDESS speech clips (modality 03, vocal channel 01) as audio-only examples."""
    out: list[Example] = []
    skipped = 0
    for path in _audio_files(Path(root)):
        parts = path.stem.split("-")
        if len(parts) != 7 or parts[0] != "03" or parts[1] != "01" or parts[2] not in RAVDESS_EMOTIONS:
            skipped += 1
            continue
        emotion = RAVDESS_EMOTIONS[parts[2]]
        if emotion == "calm":
            if not calm_as_neutral:
                continue
            emotion = "neutral"
        out.append(
            Example(
                uid=f"ravdess/{path.stem}",
                label=LABELS.index(emotion),
                audio_path=str(path),
                speaker=f"ravdess{int(parts[6]):02d}",
                corpus="ravdess",
            )
        )
    if not out:
        raise ValueError(f"no RAVDESS clips (03-01-EE-II-SS-RR-AA.wav|flac) found under {root}")
    if skipped:
        logger.info("RAVDESS: skipped %d files that are not speech clips", skipped)
    return out


def load_emodb(root: str | Path) -> list[Example]:
    """EmoDB clips as audio-only examples; boredom is dropped (no MELD label)."""
    out: list[Example] = []
    boredom = 0
    for path in _audio_files(Path(root)):
        stem = path.stem
        if len(stem) < 7 or not stem[:2].isdigit() or stem[5] not in EMODB_EMOTIONS:
            continue
        emotion = EMODB_EMOTIONS[stem[5]]
        if emotion == "boredom":
            boredom += 1
            continue
        out.append(
            Example(
                uid=f"emodb/{stem}",
                label=LABELS.index(emotion),
                audio_path=str(path),
                speaker=f"emodb{int(stem[:2]):02d}",
                corpus="emodb",
            )
        )
    if not out:
        raise ValueError(f"no EmoDB clips (SSTTTEV.wav|flac) found under {root}")
    logger.info("EmoDB: %d clips (%d boredom clips dropped)", len(out), boredom)
    return out


def load_goemotions(root: str | Path, split: str) -> list[Example]:
    """Single-label GoEmotions rows (Ekman relabelling) as text-only examples."""
    root = Path(root)
    labels_path, path = root / "labels.txt", root / f"{split}.tsv"
    for p in (labels_path, path):
        if not p.is_file():
            raise FileNotFoundError(f"GoEmotions file not found: {p}")
    names = [line.strip() for line in labels_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    unknown = [n for n in names if n not in LABELS]
    if unknown:
        raise ValueError(f"{labels_path}: labels {unknown} are not MELD labels")
    out: list[Example] = []
    with path.open(encoding="utf-8", newline="") as fh:
        for row in csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(row) < 2 or "," in row[1]:
                continue
            out.append(
                Example(
                    uid=f"goemotions/{split}/{row[2] if len(row) > 2 else len(out)}",
                    label=LABELS.index(names[int(row[1])]),
                    text=row[0].strip(),
                    corpus="goemotions",
                )
            )
    return out


def split_by_speaker(examples: Sequence[Example], held_out: Iterable[str]) -> tuple[list[Example], list[Example]]:
    """(train, test): test holds exactly the examples whose speaker is in ``held_out``."""
    held = set(held_out)
    train = [e for e in examples if e.speaker not in held]
    test = [e for e in examples if e.speaker in held]
    return train, test


def at_most_per_class(examples: Sequence[Example], per_class: int, seed: int) -> list[Example]:
    """A seeded sample with at most ``per_class`` rows of each label (all of a rarer one), in uid order:
    extra text data that adds the classes MELD lacks without drowning MELD in the common ones."""
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    rng = random.Random(seed)
    by_label: dict[int, list[Example]] = {}
    for e in examples:
        by_label.setdefault(e.label, []).append(e)
    out = [e for rows in by_label.values() for e in (rng.sample(rows, per_class) if len(rows) > per_class else rows)]
    return sorted(out, key=lambda e: e.uid)
