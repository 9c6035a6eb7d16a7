"""Replay evaluation: score emostream's utterances, transcripts and emotions against ground truth.

``emostream evaluate MEDIA --truth CSV`` replays ``MEDIA`` through the real pipeline as fast as it goes,
reads the ``emotion`` events it produced and aligns them to ground-truth utterances by time overlap.
Everything after the replay is pure and tested without I/O: truth parsing (:func:`parse_timestamp`,
:func:`read_truth_rows`), the scoring in :mod:`stream.evaluation.scoring` (alignment, word error rate, emotion
metrics, re-exported here) and the report (:func:`build_report`, :func:`report_markdown`).

Ground truth is either MELD's own CSV (``StartTime``/``EndTime`` like ``00:16:16,059``; one
``Season``/``Episode`` at a time) or a plain CSV with the header ``start_s,end_s,text,emotion``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import re
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stream.config import Config
from stream.evaluation.scoring import (
    EmotionScores,
    Match,
    Utterance,
    WordErrors,
    align,
    emotion_scores,
    normalise_words,
    word_errors,
)
from stream.protocol import LABELS

__all__ = [
    "EmotionScores",
    "Match",
    "TruthError",
    "Utterance",
    "WordErrors",
    "add_arguments",
    "align",
    "build_report",
    "emotion_scores",
    "load_truth",
    "normalise_words",
    "parse_timestamp",
    "predictions_from_events",
    "read_events",
    "read_truth_rows",
    "Replay",
    "oracle_labels",
    "replay",
    "report_markdown",
    "run_from_cli",
    "word_errors",
]

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


def _repair(text: str) -> str:
    """Undo the cp1252 mojibake older MELD copies carry (``heâ€™s`` -> ``he’s``); leave good text alone."""
    if "â" in text or "Ã" in text:
        try:
            return text.encode("cp1252").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return text
    return text


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
        try:
            if is_meld:
                ep = ((row.get("Season") or "").strip(), (row.get("Episode") or "").strip())
                if season is not None and ep[0] != str(season):
                    continue
                if episode is not None and ep[1] != str(episode):
                    continue
                episodes.add(ep)
                start, end = parse_timestamp(row["StartTime"]), parse_timestamp(row["EndTime"])
                uid = (
                    f"{stem}/dia{(row.get('Dialogue_ID') or '?').strip()}_utt{(row.get('Utterance_ID') or '?').strip()}"
                )
                utt_text, emotion = _repair(row["Utterance"]), row["Emotion"]
            else:
                start, end = float(row["start_s"]), float(row["end_s"])
                uid, utt_text, emotion = f"row{line}", row["text"] or "", row["emotion"] or ""
        except ValueError as exc:
            raise TruthError(f"{where}: {exc}") from exc
        if not (math.isfinite(start) and math.isfinite(end)) or start < 0:
            raise TruthError(f"{where}: times must be finite and non-negative, got {start}..{end}")
        if end <= start:
            # MELD test has one such row; a zero-length span cannot be aligned, so it is left out.
            logger.warning("%s: end %.3f s is not after start %.3f s; row skipped", where, end, start)
            continue
        rows.append(Utterance(start + offset_s, end + offset_s, utt_text.strip(), _label(emotion, where), uid))
    if is_meld and len(episodes) > 1:
        raise TruthError(
            f"{source} spans {len(episodes)} episodes; choose one with --season S --episode E "
            "(MELD times restart in every episode)"
        )
    return rows


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


# --------------------------------------------------------------------------- predictions


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSONL event file (``emostream run --jsonl``); a malformed line raises ``ValueError``."""
    events: list[dict[str, Any]] = []
    with Path(path).open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path} line {n} is not JSON: {exc}") from exc
            if not isinstance(obj, dict):
                raise ValueError(f"{path} line {n} is not a JSON object")
            events.append(obj)
    return events


def predictions_from_events(events: Iterable[Mapping[str, Any]], *, stream: str | None = None) -> list[Utterance]:
    """The utterances one stream produced, in time order.

    An utterance is a ``speech`` end event (what the segmenter found), joined by ``utterance_id`` with
    its ``transcript`` text and its ``emotion`` label and ``latency_ms``; one without an emotion (e.g.
    its classification failed) keeps ``emotion=None``. Events with no ``speech`` end (an emotion-only
    file) count by their ``emotion`` event. ``stream=None`` accepts the only stream there is and raises
    ``ValueError`` when there are several.
    """
    kinds = ("speech", "transcript", "emotion")
    relevant = [e for e in events if e.get("type") in kinds]
    streams = sorted({str(e.get("stream")) for e in relevant})
    if stream is None and len(streams) > 1:
        raise ValueError(f"events hold {len(streams)} streams ({', '.join(streams)}); choose one with --stream")
    found: dict[str, dict[str, Any]] = {}
    for e in relevant:
        if stream is not None and e.get("stream") != stream:
            continue
        d = e.get("data") or {}
        if e["type"] == "speech" and d.get("state") != "end":
            continue
        slot = found.setdefault(str(d.get("utterance_id", f"seq{e.get('seq')}")), {})
        try:
            if e["type"] in ("speech", "emotion") and "start_s" not in slot:
                slot["start_s"], slot["end_s"] = float(d["start_s"]), float(d["end_s"])
            if e["type"] in ("transcript", "emotion") and d.get("text"):
                slot["text"] = str(d["text"])
            if e["type"] == "emotion":
                slot["label"] = d.get("label") if d.get("label") in LABELS else None
                branches = d.get("branches")
                if isinstance(branches, Mapping):
                    slot["branches"] = tuple(
                        (str(k), str(v)) for k, v in sorted(branches.items()) if k in ("text", "audio") and v in LABELS
                    )
                latency = d.get("latency_ms")
                slot["latency_ms"] = float(latency) if isinstance(latency, int | float) else None
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{e['type']} event seq {e.get('seq')} has no usable start_s/end_s: {exc!r}") from exc
    out = [
        Utterance(
            v["start_s"], v["end_s"], v.get("text", ""), v.get("label"), uid, v.get("latency_ms"), v.get("branches", ())
        )
        for uid, v in found.items()
        if "start_s" in v
    ]
    return sorted(out, key=lambda u: (u.start_s, u.end_s))


def _stats(values: Sequence[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "mean": None, "median": None, "p95_abs": None, "max_abs": None}
    ordered = sorted(values)
    absolute = sorted(abs(v) for v in values)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    p95 = absolute[min(len(absolute) - 1, math.ceil(0.95 * len(absolute)) - 1)]
    return {
        "n": len(values),
        "mean": sum(values) / len(values),
        "median": median,
        "p95_abs": p95,
        "max_abs": absolute[-1],
    }


# --------------------------------------------------------------------------- report


def build_report(
    pred: Sequence[Utterance],
    truth: Sequence[Utterance],
    *,
    oracle: Sequence[str] | None = None,
    min_overlap: float = 0.5,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Score ``pred`` against ``truth`` (both in time order). ``oracle``: the classifier's label for
    each truth utterance's own text, in truth order (the text oracle); ``None`` leaves it out."""
    if oracle is not None and len(oracle) != len(truth):
        raise ValueError(f"oracle has {len(oracle)} labels for {len(truth)} truth utterances")
    matches = align(pred, truth, min_overlap=min_overlap)
    n_match = len(matches)
    precision = n_match / len(pred) if pred else 0.0
    recall = n_match / len(truth) if truth else 0.0
    matched_wer = sum((word_errors(truth[m.truth].text, pred[m.pred].text) for m in matches), WordErrors())
    overall_wer = word_errors(" ".join(u.text for u in truth), " ".join(u.text for u in pred))
    scored = [m for m in matches if truth[m.truth].emotion and pred[m.pred].emotion]
    report: dict[str, Any] = {
        "counts": {
            "truth": len(truth),
            "predicted": len(pred),
            "matched": n_match,
            "unclassified": sum(1 for u in pred if u.emotion is None),  # found, but no emotion event
        },
        "alignment": {"min_overlap": min_overlap, "rule": "overlap >= min_overlap * shorter span, in time order"},
        "detection": {
            "precision": precision,
            "recall": recall,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        },
        "wer": {
            "matched": _finite(matched_wer.wer),
            "overall": _finite(overall_wer.wer),
            "matched_counts": _wer_dict(matched_wer),
            "overall_counts": _wer_dict(overall_wer),
        },
        "emotion": emotion_scores(
            [truth[m.truth].emotion or "" for m in scored], [pred[m.pred].emotion or "" for m in scored]
        ).to_dict(),
        "timing": {
            "start_offset_s": _stats([pred[m.pred].start_s - truth[m.truth].start_s for m in matches]),
            "end_offset_s": _stats([pred[m.pred].end_s - truth[m.truth].end_s for m in matches]),
            "latency_ms": _stats([u.latency_ms for u in pred if u.latency_ms is not None]),
        },
        "matches": [
            {"truth": truth[m.truth].uid, "pred": pred[m.pred].uid, "overlap_s": round(m.overlap_s, 3)} for m in matches
        ],
    }
    by_branch = _branch_scores(pred, truth, scored)
    if by_branch:
        report["emotion_by_branch"] = by_branch
    if oracle is not None:
        known = [k for k, u in enumerate(truth) if u.emotion]
        report["text_oracle"] = {
            "matched": emotion_scores(
                [truth[m.truth].emotion or "" for m in scored], [oracle[m.truth] for m in scored]
            ).to_dict(),
            "all_truth": emotion_scores([truth[k].emotion or "" for k in known], [oracle[k] for k in known]).to_dict(),
        }
    if extra:
        report.update(extra)
    return report


def _branch_scores(pred: Sequence[Utterance], truth: Sequence[Utterance], scored: Sequence[Match]) -> dict[str, Any]:
    """Text only / audio only / fused emotion scores on the matched utterances where the classifier
    reported both branches' own labels (what each branch contributes); empty when it reported none."""
    rows = [m for m in scored if {k for k, _ in pred[m.pred].branches} >= {"text", "audio"}]
    if not rows:
        return {}
    gold = [truth[m.truth].emotion or "" for m in rows]
    out = {
        f"{name}_only": emotion_scores(gold, [dict(pred[m.pred].branches)[name] for m in rows]).to_dict()
        for name in ("text", "audio")
    }
    out["fused"] = emotion_scores(gold, [pred[m.pred].emotion or "" for m in rows]).to_dict()
    return out


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None  # JSON has no inf: "no reference words, some inserted"


def _wer_dict(w: WordErrors) -> dict[str, int]:
    return {
        "substitutions": w.substitutions,
        "deletions": w.deletions,
        "insertions": w.insertions,
        "ref_words": w.ref_words,
    }


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.{digits}f}"
    return str(value)


def report_markdown(report: Mapping[str, Any]) -> str:
    """The report as markdown: a summary table (pipeline vs text oracle) and the confusion matrix."""
    c, det, wer, emo = report["counts"], report["detection"], report["wer"], report["emotion"]
    oracle = report.get("text_oracle", {}).get("matched")
    timing = report["timing"]

    def orc(key: str) -> str:
        return _fmt(oracle[key]) if oracle else "–"

    lines = [
        "| metric | pipeline | text oracle |",
        "|---|---:|---:|",
        f"| utterances (truth / predicted / matched) | {c['truth']} / {c['predicted']} / {c['matched']} | |",
        f"| detection precision | {_fmt(det['precision'])} | |",
        f"| detection recall | {_fmt(det['recall'])} | |",
        f"| WER, matched utterances | {_fmt(wer['matched'])} | |",
        f"| WER, whole recording | {_fmt(wer['overall'])} | |",
        f"| emotion n (matched, labelled) | {emo['n']} | {oracle['n'] if oracle else '–'} |",
        f"| emotion accuracy | {_fmt(emo['accuracy'])} | {orc('accuracy')} |",
        f"| emotion weighted-F1 | {_fmt(emo['weighted_f1'])} | {orc('weighted_f1')} |",
        f"| emotion macro-F1 | {_fmt(emo['macro_f1'])} | {orc('macro_f1')} |",
        f"| start offset median (s) | {_fmt(timing['start_offset_s']['median'])} | |",
        f"| end offset median (s) | {_fmt(timing['end_offset_s']['median'])} | |",
    ]
    if "replay" in report:
        rp = report["replay"]
        lines.append(
            f"| replay wall time (s) / audio (s) / RTF | {_fmt(rp.get('wall_s'), 1)} / "
            f"{_fmt(rp.get('audio_s'), 1)} / {_fmt(rp.get('rtf'))} | |"
        )
    branch = report.get("emotion_by_branch")
    if branch:
        n = branch["fused"]["n"]
        for key in ("accuracy", "weighted_f1"):
            lines.append(
                f"| emotion {key.replace('_', '-')} on {n} utterances with both branches: text only / audio only / "
                f"fused | {_fmt(branch['text_only'][key])} / {_fmt(branch['audio_only'][key])} / "
                f"{_fmt(branch['fused'][key])} | |"
            )
    if "all_truth" in report.get("text_oracle", {}):
        all_t = report["text_oracle"]["all_truth"]
        lines.append(
            f"| text oracle on all {all_t['n']} truth utterances, weighted-F1 | | {_fmt(all_t['weighted_f1'])} |"
        )
    lines += ["", "Confusion matrix on matched utterances (rows: truth, columns: prediction)", ""]
    short = [label[:4] for label in LABELS]
    lines.append("| truth \\ pred | " + " | ".join(short) + " |")
    lines.append("|---|" + "---:|" * len(LABELS))
    for label, row in zip(LABELS, emo["confusion"]["matrix"], strict=True):
        lines.append(f"| {label} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- replay and CLI


def media_duration_s(path: str | Path) -> float | None:
    """The audio duration PyAV reports for ``path`` (container metadata; ``None`` when unknown)."""
    import av

    try:
        with av.open(str(path)) as container:
            if container.streams.audio:
                s = container.streams.audio[0]
                if s.duration is not None and s.time_base is not None:
                    return float(s.duration * s.time_base)
            return container.duration / 1_000_000 if container.duration else None
    except (av.error.FFmpegError, OSError) as exc:
        logger.warning("cannot read the duration of %s: %s", path, exc)
        return None


@dataclass(frozen=True, slots=True)
class Replay:
    """What :func:`replay` measured; ``predictor`` is the classifier it loaded (reused by the oracle)."""

    load_s: float  # loading Whisper and the classifier
    run_s: float  # the pipeline, from the first chunk to the last event
    predictor: Any


def replay(config: Config, media: str | Path, events_path: str | Path) -> Replay:
    """Run the real service in this process on ``media`` as fast as it goes, events to ``events_path``.

    Same as ``emostream run --source MEDIA --fast --no-server --jsonl EVENTS --quiet`` with ``config``,
    but the models are loaded first and timed apart, so ``run_s`` is the pipeline alone.
    """
    import asyncio
    import dataclasses

    from stream.service import RunOptions, run_service
    from stream.stages.classifier import load_predictor
    from stream.stages.transcriber import WhisperTranscriber

    cfg = dataclasses.replace(
        config,
        audio=dataclasses.replace(config.audio, replay_fast=True),
        server=dataclasses.replace(config.server, enabled=False),
    )
    t0 = time.perf_counter()
    predictor = load_predictor(str(cfg.resolve_path(cfg.classifier.checkpoint)), device=cfg.classifier.device)
    transcriber = WhisperTranscriber.load(cfg.asr)
    # Lazy parts (the audio-feature encoder, first-call allocations) load now, not inside the timed run.
    warm = np.zeros(16000, dtype=np.float32)
    predictor.predict(["warm up"] if predictor.uses_text else [None], [warm] if predictor.uses_audio else [None])
    transcriber.transcribe(warm)
    # faster-whisper logs every utterance at INFO; the report is this command's output.
    logging.getLogger("faster_whisper").setLevel(max(logging.WARNING, logging.getLogger().level))
    t1 = time.perf_counter()
    options = RunOptions(sources=(str(media),), jsonl=str(events_path), exit_when_done=True, quiet=True)
    status = asyncio.run(run_service(cfg, options, models=(transcriber, predictor)))
    t2 = time.perf_counter()
    if status != 0:
        raise RuntimeError(f"the replay of {media} failed (exit status {status}; see the log above)")
    return Replay(t1 - t0, t2 - t1, predictor)


def oracle_labels(predictor: Any, truth: Sequence[Utterance], *, batch: int = 16) -> list[str]:
    """The classifier's label for each truth utterance's own text (no audio): the text oracle."""
    labels: list[str] = []
    for k in range(0, len(truth), max(1, batch)):
        chunk = truth[k : k + batch]
        preds = predictor.predict([u.text or None for u in chunk], [None] * len(chunk))
        labels += [p.label for p in preds]
    return labels


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``emostream evaluate`` (the common ones come from :mod:`stream.cli`)."""
    parser.add_argument("media", nargs="?", default=None, help="the recording to replay (any file PyAV decodes)")
    parser.add_argument(
        "--truth",
        action="append",
        required=True,
        metavar="CSV",
        help="ground truth: MELD's CSV or start_s,end_s,text,emotion; repeat to merge files",
    )
    parser.add_argument("--season", type=int, default=None, help="MELD truth: keep this Season only")
    parser.add_argument("--episode", type=int, default=None, help="MELD truth: keep this Episode only")
    parser.add_argument("--offset-s", type=float, default=0.0, help="add this to every truth time (default 0)")
    parser.add_argument("--json", default=None, metavar="OUT", help="write the full report as JSON")
    parser.add_argument(
        "--events",
        default=None,
        metavar="JSONL",
        help="score these events (from `emostream run --jsonl`) instead of replaying MEDIA",
    )
    parser.add_argument("--keep-events", default=None, metavar="JSONL", help="where the replay writes its events")
    parser.add_argument("--stream", default=None, help="the stream id to score when the events hold several")
    parser.add_argument(
        "--min-overlap",
        type=float,
        default=0.5,
        help="overlap needed to match, as a fraction of the shorter span (default 0.5)",
    )
    parser.add_argument("--no-oracle", action="store_true", help="skip the text oracle (no classifier load)")


def run_from_cli(config: Config, args: argparse.Namespace) -> int:
    """``emostream evaluate``: replay (or read events), score, print markdown, optionally write JSON."""
    if args.media is None and args.events is None:
        print("emostream evaluate: give the MEDIA to replay, or --events JSONL to score", file=sys.stderr)
        return 2
    if args.media is not None and not Path(args.media).is_file():
        print(f"emostream evaluate: media file not found: {args.media}", file=sys.stderr)
        return 2
    try:
        truth = load_truth(args.truth, season=args.season, episode=args.episode, offset_s=args.offset_s)
    except TruthError as exc:
        print(f"emostream evaluate: {exc}", file=sys.stderr)
        return 2
    extra: dict[str, Any] = {
        "media": args.media,
        "truth_files": list(args.truth),
        "asr_model": config.asr.model,
        "checkpoint": config.classifier.checkpoint,
    }
    predictor: Any = None
    try:
        if args.events is not None:
            events = read_events(args.events)
        else:
            with tempfile.TemporaryDirectory(prefix="emostream-eval-") as tmp:
                events_path = Path(args.keep_events or Path(tmp) / "events.jsonl")
                result = replay(config, args.media, events_path)
                events = read_events(events_path)
            predictor = result.predictor
            audio_s = media_duration_s(args.media)
            extra["replay"] = {
                "load_s": round(result.load_s, 3),
                "wall_s": round(result.run_s, 3),
                "audio_s": audio_s,
                "rtf": result.run_s / audio_s if audio_s else None,
            }
        pred = predictions_from_events(events, stream=args.stream)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"emostream evaluate: {exc}", file=sys.stderr)
        return 1
    oracle = None
    if not args.no_oracle:
        try:
            if predictor is None:
                from stream.stages.classifier import load_predictor

                checkpoint = config.resolve_path(config.classifier.checkpoint)
                predictor = load_predictor(str(checkpoint), device=config.classifier.device)
            oracle = oracle_labels(predictor, truth, batch=config.classifier.max_batch)
        except (ImportError, OSError, ValueError, RuntimeError) as exc:
            print(f"emostream evaluate: text oracle unavailable ({exc}); use --no-oracle to skip it", file=sys.stderr)
            return 1
    try:
        report = build_report(pred, truth, oracle=oracle, min_overlap=args.min_overlap, extra=extra)
    except ValueError as exc:
        print(f"emostream evaluate: {exc}", file=sys.stderr)
        return 2
    print(report_markdown(report), end="")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
        print(f"report written to {args.json}")
    return 0
