"""Ground truth for an evaluation: MELD's CSV or a plain ``start_s,end_s,text,emotion`` CSV.

MELD's times look like ``00:16:16,059``; keep one ``Season``/``Episode`` at a time.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path

from stream.evaluation.scoring import Utterance
from stream.records import LABELS
from training.data import repair_text

__all__ = ["MELD_COLUMNS", "PLAIN_COLUMNS", "TruthError", "load_truth", "parse_timestamp", "read_truth_rows"]

logger = logging.getLogger(__name__)


MELD_COLUMNS = ("Utterance", "Emotion", "StartTime", "EndTime")
PLAIN_COLUMNS = ("start_s", "end_s", "text", "emotion")


class TruthError(ValueError):
    """A ground-truth file is missing, malformed, or selects no utterance."""


# --------------------------------------------------------------------------- ground truth

_TIME_RE = re.compile(r"\s*(?:(\d+):)?(\d{1,2}):(\d{1,2})(?:[,.](\d{1,6}))?\s*")


def parse_timestamp(value: str) -> float:
    """``"00:16:16,059"`` / ``"0:12:43,012"`` / ``"12:43.5"`` -> seconds. Raises ``ValueError`` naming it."""
    m = _TIME_RE.fullmatch(value)
    if m is None:
        raise ValueError(f"not a timestamp like 00:16:16,059: {value!r}")
    hours, minutes, seconds, frac = m.groups()
    if int(minutes) >= 60 or int(seconds) >= 60:
        raise ValueError(f"minutes and seconds must be below 60 in timestamp {value!r}")
    out = int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds)
    return out + (int(frac) / 10 ** len(frac) if frac else 0.0)


def _label(raw: str, where: str) -> str | None:
    value = raw.strip().lower()
    if not value:
        return None
    if value not in LABELS:
        raise TruthError(f"{where}: unknown emotion {raw!r}; allowed: {', '.join(LABELS)} (or empty)")
    return value


def read_truth_rows(
    text: str,
    *,
    source: str = "truth",
    season: int | None = None,
    episode: int | None = None,
    offset_s: float = 0.0,
) -> list[Utterance]:
    """Parse a truth CSV given as text (MELD or plain format, detected from the header).

    MELD rows are kept for one ``season``/``episode``; a MELD file spanning several episodes needs both.
    ``offset_s`` is added to every time (for a recording that starts earlier or later than the annotation).
    """
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    is_meld = all(c in header for c in MELD_COLUMNS)
    if not is_meld and not all(c in header for c in PLAIN_COLUMNS):
        raise TruthError(
            f"{source}: header {header!r} is neither MELD's (needs {', '.join(MELD_COLUMNS)}) "
            f"nor the plain format ({','.join(PLAIN_COLUMNS)})"
        )
    if not is_meld and (season is not None or episode is not None):
        raise TruthError(f"{source}: --season/--episode apply to MELD CSVs only")
    stem = Path(source).stem  # MELD's dialogue ids repeat across splits: keep the file in the id
    rows: list[Utterance] = []
    episodes: set[tuple[str, str]] = set()
    required = MELD_COLUMNS if is_meld else PLAIN_COLUMNS
    for row in reader:
        line = reader.line_num  # the physical line, also after quoted multi-line texts
        where = f"{source} line {line}"
        if any(row.get(c) is None for c in required):
            raise TruthError(f"{where}: too few fields; expected the columns {', '.join(required)}")
        if is_meld:
            ep = ((row.get("Season") or "").strip(), (row.get("Episode") or "").strip())
            if (season is not None and ep[0] != str(season)) or (episode is not None and ep[1] != str(episode)):
                continue
            episodes.add(ep)
        utt = _meld_row(row, stem, where) if is_meld else _plain_row(row, line, where)
        if utt is not None:
            rows.append(dataclasses.replace(utt, start_s=utt.start_s + offset_s, end_s=utt.end_s + offset_s))
    if is_meld and len(episodes) > 1:
        raise TruthError(
            f"{source} spans {len(episodes)} episodes; choose one with --season S --episode E "
            "(MELD times restart in every episode)"
        )
    return rows


def _meld_row(row: dict[str, str], stem: str, where: str) -> Utterance | None:
    try:
        start, end = parse_timestamp(row["StartTime"]), parse_timestamp(row["EndTime"])
    except ValueError as exc:
        raise TruthError(f"{where}: {exc}") from exc
    uid = f"{stem}/dia{(row.get('Dialogue_ID') or '?').strip()}_utt{(row.get('Utterance_ID') or '?').strip()}"
    speaker = (row.get("Speaker") or "").strip() or None
    return _utterance(start, end, repair_text(row["Utterance"]), row["Emotion"], uid, speaker, where)


def _plain_row(row: dict[str, str], line: int, where: str) -> Utterance | None:
    try:
        start, end = float(row["start_s"]), float(row["end_s"])
    except ValueError as exc:
        raise TruthError(f"{where}: {exc}") from exc
    speaker = (row.get("speaker") or "").strip() or None  # optional column
    return _utterance(start, end, row["text"] or "", row["emotion"] or "", f"row{line}", speaker, where)


def _utterance(
    start: float, end: float, text: str, emotion: str, uid: str, speaker: str | None, where: str
) -> Utterance | None:
    """The row as an utterance; ``None`` (with a warning) for a zero-length span."""
    if not (math.isfinite(start) and math.isfinite(end)) or start < 0:
        raise TruthError(f"{where}: times must be finite and non-negative, got {start}..{end}")
    if end <= start:
        # MELD test has one such row; a zero-length span cannot be aligned, so it is left out.
        logger.warning("%s: end %.3f s is not after start %.3f s; row skipped", where, end, start)
        return None
    return Utterance(start, end, text.strip(), _label(emotion, where), uid, speaker=speaker)


def load_truth(
    paths: Sequence[str | Path],
    *,
    season: int | None = None,
    episode: int | None = None,
    offset_s: float = 0.0,
) -> list[Utterance]:
    """Read one or more truth CSVs (e.g. MELD train+dev+test rows of one episode), merged in time order.

    Identical rows (same span and text) are kept once. Raises :class:`TruthError` when nothing is left.
    """
    merged: dict[tuple[float, float, str], Utterance] = {}
    for path in paths:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8-sig")
        except FileNotFoundError as exc:
            raise TruthError(f"truth file not found: {p}") from exc
        except UnicodeDecodeError:
            text = p.read_bytes().decode("cp1252", errors="replace")  # old MELD copies
        for u in read_truth_rows(text, source=str(p), season=season, episode=episode, offset_s=offset_s):
            merged.setdefault((round(u.start_s, 3), round(u.end_s, 3), u.text), u)
    if not merged:
        where = f" for season {season} episode {episode}" if season is not None or episode is not None else ""
        raise TruthError(f"no ground-truth utterances{where} in {', '.join(map(str, paths))}")
    return sorted(merged.values(), key=lambda u: (u.start_s, u.end_s))
