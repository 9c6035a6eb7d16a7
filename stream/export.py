"""Keep what a run found: subtitles (SRT, WebVTT) and a spreadsheet (CSV) from an event log.

One cue per utterance, timed on its stream's own timeline (``start_s``/``end_s``, so the subtitles line up
with the replayed file in a player), with the words, the emotion and its score, and the speaker when the
events carry one (``data.speaker`` on ``transcript`` or ``emotion``: a label such as ``S1``, or an object
with ``name``/``label``/``id``). ``speaker`` events apply as the run finally knew them: a label ``named``
shows its name, a label ``merged`` into another shows that one's (even for cues before the event), an
utterance ``corrected`` to another label shows that label.

The formatting is pure (:func:`to_srt`, :func:`to_vtt`, :func:`to_csv`); :class:`SubtitleWriter` writes
SRT cue by cue while the service runs (``emostream run --srt FILE``; names known by then apply).

``web/export.js`` formats the page's downloads the same way; ``tests/web`` keeps the two in step.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from stream.protocol import LABELS, Event

__all__ = [
    "FORMATS",
    "Cue",
    "ExportError",
    "SubtitleWriter",
    "cues_from_events",
    "export_file",
    "to_csv",
    "to_srt",
    "to_vtt",
]

logger = logging.getLogger(__name__)

FORMATS: Final = ("srt", "vtt", "csv")
_MIN_CUE_S: Final = 0.3  # a zero-length utterance still shows
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")


class ExportError(ValueError):
    """The event log cannot be exported as asked (says why)."""


@dataclass(frozen=True, slots=True)
class Cue:
    """One utterance as a subtitle."""

    stream: str
    utterance_id: str
    start_s: float
    end_s: float
    text: str
    label: str  # "" when the utterance has no emotion (classification failed)
    score: float  # the label's score, 0..1
    scores: Mapping[str, float]
    speaker: str  # "" when unknown
    modalities: tuple[str, ...] = ()


def _speaker(data: Mapping[str, Any]) -> str:
    value = data.get("speaker")
    if isinstance(value, Mapping):
        value = value.get("name") or value.get("label") or value.get("id")
    if value is None or value == "":
        return ""
    return " ".join(str(value).split())[:80]


def _note_speaker(
    event: Event,
    names: dict[tuple[str, str], str],
    merged: dict[tuple[str, str], str],
    corrected: dict[tuple[str, str], str],
) -> None:
    """A ``speaker`` event: a label ``named``, ``merged`` into another, or an utterance ``corrected``
    to another label (what the subtitles then say)."""
    data = event.data
    label = str(data.get("speaker") or "")
    if not label:
        return
    if data.get("action") == "named" and data.get("name"):
        names[(event.stream, label)] = " ".join(str(data["name"]).split())[:80]
    elif data.get("action") == "merged" and data.get("into"):
        merged[(event.stream, label)] = str(data["into"])
    elif data.get("action") == "corrected" and data.get("into") and data.get("utterance_id"):
        corrected[(event.stream, str(data["utterance_id"]))] = str(data["into"])


def _resolve(
    stream: str, label: str, names: Mapping[tuple[str, str], str], merged: Mapping[tuple[str, str], str]
) -> str:
    """A speaker label as the run finally knew it: merges followed, then its name (the label if none)."""
    for _ in range(32):  # merges form chains, never loops; bounded all the same
        if (stream, label) not in merged:
            break
        label = merged[(stream, label)]
    return names.get((stream, label), label)


def cues_from_events(events: Iterable[Event], *, stream: str | None = None) -> list[Cue]:
    """Cues of every utterance with words or an emotion, by stream then start time.

    An ``emotion`` event makes the cue; a ``transcript`` with no emotion after it (the classifier
    failed on it) still gives a cue with its words and no label.
    """
    transcripts: dict[tuple[str, str], Mapping[str, Any]] = {}
    emotions: dict[tuple[str, str], Mapping[str, Any]] = {}
    names: dict[tuple[str, str], str] = {}  # (stream, speaker label) -> the name it was given
    merged: dict[tuple[str, str], str] = {}  # (stream, retired label) -> the label it turned out to be
    corrected: dict[tuple[str, str], str] = {}  # (stream, utterance id) -> its label after a correction
    for event in events:
        if stream is not None and event.stream != stream:
            continue
        if event.type == "speaker":
            _note_speaker(event, names, merged, corrected)
            continue
        if event.type not in ("transcript", "emotion") or event.stream.startswith("_"):
            continue
        uid = str(event.data.get("utterance_id", ""))
        if not uid:
            continue
        (transcripts if event.type == "transcript" else emotions)[(event.stream, uid)] = event.data
    cues: list[Cue] = []
    for key in dict.fromkeys([*transcripts, *emotions]):
        emo, tr = emotions.get(key), transcripts.get(key)
        data = emo or tr
        assert data is not None
        text = " ".join(str((emo or {}).get("text") or (tr or {}).get("text") or "").split())
        label = str(emo.get("label", "")) if emo else ""
        raw_scores = emo.get("scores") if emo else None
        scores = {str(k): float(v) for k, v in raw_scores.items()} if isinstance(raw_scores, Mapping) else {}
        if not text and not label:
            continue  # nothing heard, nothing judged
        try:
            start = float(data.get("start_s", 0.0))
            end = float(data.get("end_s", start))
        except (TypeError, ValueError):
            continue
        if not (math.isfinite(start) and math.isfinite(end)):
            continue
        sent = _speaker(emo or {}) or _speaker(tr or {})
        speaker = _resolve(key[0], corrected.get(key, sent), names, merged)
        mods = tuple(str(m) for m in (emo or {}).get("modalities") or ())
        cues.append(
            Cue(
                key[0],
                key[1],
                max(0.0, start),
                max(end, start + _MIN_CUE_S),
                text,
                label,
                scores.get(label, 0.0),
                scores,
                speaker,
                mods,
            )  # fmt: skip
        )
    cues.sort(key=lambda c: (c.stream, c.start_s, c.end_s))
    return cues


def _clock(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _emotion_line(cue: Cue) -> str:
    return f"({cue.label} {round(cue.score * 100)}%)" if cue.label else ""


def _safe_text(text: str) -> str:
    # "-->" would end a cue's timing line early in some players; blank lines end the cue.
    return text.replace("-->", "->")


def _one_stream(cues: Sequence[Cue]) -> None:
    streams = sorted({c.stream for c in cues})
    if len(streams) > 1:
        raise ExportError(
            f"subtitles follow one stream's timeline, and this log has {len(streams)}: "
            f"{', '.join(streams)}; choose one with --stream"
        )


def _cue_lines(cue: Cue, *, vtt: bool) -> list[str]:
    text = _safe_text(cue.text) if cue.text else "(no words)"
    if vtt:
        text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        if cue.speaker:
            name = cue.speaker.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            text = f"<v {name}>{text}</v>"
    elif cue.speaker:
        text = f"{cue.speaker}: {text}"
    emotion = _emotion_line(cue)
    return [text, emotion] if emotion else [text]


def srt_cue(index: int, cue: Cue) -> str:
    """One SRT block (ends with a blank line)."""
    timing = f"{_clock(cue.start_s, ',')} --> {_clock(cue.end_s, ',')}"
    return "\n".join([str(index), timing, *_cue_lines(cue, vtt=False)]) + "\n\n"


def to_srt(cues: Sequence[Cue]) -> str:
    """SubRip subtitles of one stream's cues."""
    _one_stream(cues)
    return "".join(srt_cue(i, cue) for i, cue in enumerate(cues, 1))


def to_vtt(cues: Sequence[Cue]) -> str:
    """WebVTT subtitles of one stream's cues (speaker as a ``<v>`` voice span)."""
    _one_stream(cues)
    parts = ["WEBVTT\n\n"]
    for i, cue in enumerate(cues, 1):
        timing = f"{_clock(cue.start_s, '.')} --> {_clock(cue.end_s, '.')}"
        parts.append("\n".join([f"{cue.stream}-{i}", timing, *_cue_lines(cue, vtt=True)]) + "\n\n")
    return "".join(parts)


def _cell(value: str) -> str:
    # A cell starting with = + - @ is a formula to a spreadsheet: quote it as text.
    return f"'{value}" if value.startswith(_FORMULA_START) else value


def to_csv(cues: Sequence[Cue], labels: Sequence[str] = LABELS) -> str:
    """One row per utterance, every label's score in its own column (opens in any spreadsheet)."""
    known = list(labels) + sorted({k for c in cues for k in c.scores} - set(labels))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(
        [
            "stream",
            "utterance_id",
            "start_s",
            "end_s",
            "start",
            "end",
            "speaker",
            "text",
            "emotion",
            "score",
            "modalities",
            *(f"score_{k}" for k in known),
        ]  # fmt: skip
    )
    for c in cues:
        writer.writerow(
            [
                _cell(c.stream),
                _cell(c.utterance_id),
                f"{c.start_s:.3f}",
                f"{c.end_s:.3f}",
                _clock(c.start_s, "."),
                _clock(c.end_s, "."),
                _cell(c.speaker),
                _cell(c.text),
                c.label,
                f"{c.score:.4f}" if c.label else "",
                "+".join(c.modalities),
                *(f"{c.scores[k]:.4f}" if k in c.scores else "" for k in known),
            ]  # fmt: skip
        )
    return out.getvalue()


def export_file(events_path: Path, fmt: str, out: Path, *, stream: str | None = None) -> int:
    """Write ``events_path`` as ``fmt`` to ``out``; returns the number of cues. Raises ExportError."""
    from stream.events.eventlog import read_events

    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if not events_path.is_file():
        raise ExportError(f"{events_path}: no such event log")
    try:
        events = list(read_events(events_path))
    except OSError as exc:
        raise ExportError(f"cannot read {events_path}: {exc}") from exc
    if not events:
        raise ExportError(f"{events_path} holds no events (is it an emostream event log or --jsonl file?)")
    cues = cues_from_events(events, stream=stream)
    if stream is not None and not cues:
        seen = sorted({e.stream for e in events if not e.stream.startswith("_")})
        raise ExportError(f"stream {stream!r} has no utterances in {events_path}; streams: {', '.join(seen) or 'none'}")
    labels = next((tuple(e.data["labels"]) for e in events if e.type == "hello" and "labels" in e.data), LABELS)
    if fmt == "csv":
        text, encoding = to_csv(cues, labels), "utf-8-sig"  # the BOM makes spreadsheets read UTF-8
    else:
        text, encoding = (to_srt(cues) if fmt == "srt" else to_vtt(cues)), "utf-8"
    tmp = out.with_name(out.name + ".part")
    try:
        tmp.write_text(text, encoding=encoding, newline="")
        tmp.replace(out)  # a reader never sees half a file
    except OSError as exc:
        raise ExportError(f"cannot write {out}: {exc}") from exc
    return len(cues)


class SubtitleWriter:
    """An event sink writing SRT while the service runs: a cue per ``emotion`` event, flushed at once.

    ``path`` gets the cues of ``stream`` (the only source); with several sources give each its own
    file (see :meth:`for_streams`). A write error is logged once and the run goes on.
    """

    def __init__(self, path: Path, stream: str) -> None:
        self.path = path
        self.stream = stream
        self._fh: IO[str] | None = open(path, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed in close()
        self.count = 0
        self._speaker_events: list[Event] = []

    @classmethod
    def for_streams(cls, path: Path, streams: Sequence[str]) -> list[SubtitleWriter]:
        """One writer per stream: ``path`` itself for one stream, ``NAME.STREAM.srt`` for several."""
        if len(streams) == 1:
            return [cls(path, streams[0])]
        safe = [re.sub(r"[^A-Za-z0-9_.-]+", "-", s) for s in streams]
        return [
            cls(path.with_name(f"{path.stem}.{s}{path.suffix or '.srt'}"), st)
            for s, st in zip(safe, streams, strict=True)
        ]

    def __call__(self, event: Event) -> None:
        if self._fh is None or event.stream != self.stream:
            return
        if event.type == "speaker":  # names and merges known so far apply to the cues still to come
            self._speaker_events.append(event)
            return
        if event.type != "emotion":
            return
        cues = cues_from_events([*self._speaker_events, event])
        if not cues:
            return
        self.count += 1
        try:
            self._fh.write(srt_cue(self.count, cues[0]))
            self._fh.flush()
        except OSError as exc:
            logger.error("cannot write subtitles to %s (%s); no more cues will be written", self.path, exc)
            self.close()

    def close(self) -> None:
        if self._fh is not None:
            fh, self._fh = self._fh, None
            fh.close()
