"""MELD: the annotation CSVs (with mojibake repair) and the MELD.Raw clip layout.

``load_meld(data_dir, split)`` reads ``{split}_sent_emo.csv``. ``attach_meld_raw(examples, raw_dir,
split)`` points each row at its ``dia{D}_utt{U}.mp4`` under the MELD.Raw split folder; a row whose
clip is missing keeps ``audio_path=None`` (text-only) and is counted in the returned report.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "LABELS",
    "MELD_RAW_FOLDERS",
    "Example",
    "MeldRawReport",
    "attach_meld_raw",
    "label_counts",
    "load_meld",
    "repair_text",
]

logger = logging.getLogger(__name__)

LABELS: tuple[str, ...] = ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise")
SPLITS = ("train", "dev", "test")
MELD_RAW_FOLDERS = {"train": "train_splits", "dev": "dev_splits_complete", "test": "output_repeated_splits_test"}


@dataclass(frozen=True, slots=True)
class Example:
    """One labelled utterance; either modality may be absent."""

    uid: str  # e.g. "meld/train/dia0_utt0"
    label: int  # index into LABELS
    text: str | None = None
    audio_path: str | None = None
    speaker: str = ""
    corpus: str = ""


# Mojibake: UTF-8 bytes that were decoded as cp1252 (â€™ -> ’), plus stray cp1252 control bytes.
_MOJIBAKE = re.compile(
    "[\u00c2\u00c3\u00e2][\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192"
    "\u02c6\u02dc\u2013\u2014\u2018\u2019\u201a\u201c\u201d\u201e\u2020\u2021\u2022\u2026"
    "\u2030\u2039\u203a\u20ac\u2122]+"
)
_CP1252_CONTROLS = re.compile("[\u0080-\u009f]")
_SPACES = re.compile(r"\s+")


def _fix_mojibake_run(match: re.Match[str]) -> str:
    run = match.group(0)
    try:
        return run.encode("cp1252").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        try:
            return run.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return run


def repair_text(text: str) -> str:
    """Undo MELD's encoding damage and normalise punctuation to what Whisper writes.

    ``â€™`` -> ``'``, ``Â`` (a stray non-breaking-space marker) dropped, ``â€"`` -> ``-``, stray
    cp1252 bytes (``\\x92``) decoded, curly quotes and ellipses made ASCII, whitespace collapsed.
    """
    # Em dashes whose last byte became an ASCII quote, and apostrophes whose last byte was lost.
    fixed = text.replace('\u00e2\u20ac"', "-")
    fixed = _MOJIBAKE.sub(_fix_mojibake_run, fixed).replace("\u00e2\u20ac", "'")
    fixed = _CP1252_CONTROLS.sub(lambda m: m.group(0).encode("latin-1").decode("cp1252", errors="ignore"), fixed)
    fixed = fixed.replace("\u00c2", "").replace("\u00a0", " ")
    table = {
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2026": "...",
        "\u2013": "-",
        "\u2014": "-",
        "\u2015": "-",
        "\u00b4": "'",
    }
    for bad, good in table.items():
        fixed = fixed.replace(bad, good)
    return _SPACES.sub(" ", fixed).strip()


def load_meld(data_dir: str | Path, split: str) -> list[Example]:
    """Rows of ``{data_dir}/{split}_sent_emo.csv`` as examples with repaired text."""
    if split not in SPLITS:
        raise ValueError(f"unknown MELD split {split!r}; use one of {', '.join(SPLITS)}")
    path = Path(data_dir) / f"{split}_sent_emo.csv"
    if not path.is_file():
        raise FileNotFoundError(f"MELD annotations not found: {path} (expected {{train,dev,test}}_sent_emo.csv)")
    out: list[Example] = []
    with path.open(encoding="utf-8", errors="surrogateescape", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"Utterance", "Emotion", "Dialogue_ID", "Utterance_ID"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing columns {', '.join(sorted(missing))}")
        for line, row in enumerate(reader, start=2):
            emotion = row["Emotion"].strip().lower()
            if emotion not in LABELS:
                raise ValueError(f"{path}:{line}: unknown emotion {row['Emotion']!r}")
            raw_text = (
                row["Utterance"].encode("utf-8", "surrogateescape").decode("cp1252", errors="replace")
                if any("\udc80" <= ch <= "\udcff" for ch in row["Utterance"])
                else row["Utterance"]
            )
            dia, utt = row["Dialogue_ID"].strip(), row["Utterance_ID"].strip()
            out.append(
                Example(
                    uid=f"meld/{split}/dia{dia}_utt{utt}",
                    label=LABELS.index(emotion),
                    text=repair_text(raw_text),
                    speaker=row.get("Speaker", "").strip(),
                    corpus="meld",
                )
            )
    logger.info("MELD %s: %d rows from %s", split, len(out), path)
    return out


@dataclass(frozen=True, slots=True)
class MeldRawReport:
    split: str
    folder: str
    found: int
    missing: int
    missing_examples: tuple[str, ...]  # a few uids, for the message


def attach_meld_raw(
    examples: Sequence[Example], raw_dir: str | Path, split: str
) -> tuple[list[Example], MeldRawReport]:
    """Set ``audio_path`` for rows whose MELD.Raw clip exists (mp4, or a wav/flac beside it)."""
    folder = Path(raw_dir) / MELD_RAW_FOLDERS[split]
    if not folder.is_dir():
        raise FileNotFoundError(f"MELD.Raw folder not found: {folder}")
    out: list[Example] = []
    missing: list[str] = []
    for ex in examples:
        stem = ex.uid.rsplit("/", 1)[-1]
        clip = next(
            (folder / f"{stem}{ext}" for ext in (".mp4", ".wav", ".flac") if (folder / f"{stem}{ext}").is_file()), None
        )
        if clip is None:
            missing.append(ex.uid)
            out.append(ex)
        else:
            out.append(dataclasses.replace(ex, audio_path=str(clip)))
    report = MeldRawReport(split, str(folder), len(examples) - len(missing), len(missing), tuple(missing[:5]))
    if missing:
        logger.warning(
            "MELD.Raw %s: %d of %d clips missing in %s (those rows go text-only), e.g. %s",
            split,
            len(missing),
            len(examples),
            folder,
            ", ".join(missing[:3]),
        )
    return out, report


def label_counts(examples: Sequence[Example]) -> dict[str, int]:
    counts = Counter(LABELS[e.label] for e in examples)
    return {label: counts.get(label, 0) for label in LABELS}
