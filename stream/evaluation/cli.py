"""``emostream evaluate MEDIA --truth CSV``: replay (or read events), score, print markdown, write JSON."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from stream.config import Config
from stream.evaluation import (
    TruthError,
    Utterance,
    build_report,
    load_truth,
    media_duration_s,
    oracle_labels,
    predictions_from_events,
    read_jsonl,
    replay,
    report_markdown,
    speaker_corrections,
    speaker_merges,
)

__all__ = ["add_arguments", "run_from_cli"]


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


class _Failed(Exception):
    """A step failed; ``status`` is the exit status, the message what to print."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def run_from_cli(config: Config, args: argparse.Namespace) -> int:
    """``emostream evaluate``: replay (or read events), score, print markdown, optionally write JSON."""
    try:
        truth = _truth(args)
        extra: dict[str, Any] = {
            "media": args.media,
            "truth_files": list(args.truth),
            "asr_model": config.asr.model,
            "checkpoint": config.classifier.checkpoint,
        }
        pred, predictor, merges, corrections = _predictions(config, args, extra)
        oracle = None
        if not args.no_oracle:
            oracle, predictor = _oracle(config, predictor, truth)
        try:
            report = build_report(pred, truth, oracle=oracle, min_overlap=args.min_overlap, extra=extra, merges=merges,
                                  corrections=corrections)  # fmt: skip
        except ValueError as exc:
            raise _Failed(2, str(exc)) from exc
        if predictor is not None and (getattr(predictor, "uses_context", False) or getattr(predictor, "past_lines", 0)):
            from stream.evaluation.context_eval import context_ablation

            c = config.classifier
            report["context"] = context_ablation(predictor, pred, truth, max_utterances=c.context_utterances,
                                                 window_s=c.context_window_s, min_overlap=args.min_overlap)  # fmt: skip
            report["context"]["pipeline_reads_context"] = c.context
    except _Failed as exc:
        print(f"emostream evaluate: {exc}", file=sys.stderr)
        return exc.status
    print(report_markdown(report), end="")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
        print(f"report written to {args.json}")
    return 0


def _truth(args: argparse.Namespace) -> list[Utterance]:
    if args.media is None and args.events is None:
        raise _Failed(2, "give the MEDIA to replay, or --events JSONL to score")
    if args.media is not None and not Path(args.media).is_file():
        raise _Failed(2, f"media file not found: {args.media}")
    try:
        return load_truth(args.truth, season=args.season, episode=args.episode, offset_s=args.offset_s)
    except TruthError as exc:
        raise _Failed(2, str(exc)) from exc


def _predictions(
    config: Config, args: argparse.Namespace, extra: dict[str, Any]
) -> tuple[list[Utterance], Any, dict[str, str], dict[str, str]]:
    """The predicted utterances (from ``--events`` or a replay; timing into ``extra``), the
    classifier the replay loaded (None without a replay), the run's speaker merges and corrections."""
    predictor: Any = None
    try:
        if args.events is not None:
            events = read_jsonl(args.events)
        else:
            with tempfile.TemporaryDirectory(prefix="emostream-eval-") as tmp:
                events_path = Path(args.keep_events or Path(tmp) / "events.jsonl")
                result = replay(config, args.media, events_path)
                events = read_jsonl(events_path)
            predictor = result.predictor
            audio_s = media_duration_s(args.media)
            extra["replay"] = {
                "load_s": round(result.load_s, 3),
                "wall_s": round(result.run_s, 3),
                "audio_s": audio_s,
                "rtf": result.run_s / audio_s if audio_s else None,
            }
        merges = speaker_merges(events, stream=args.stream)
        corrections = speaker_corrections(events, stream=args.stream)
        return predictions_from_events(events, stream=args.stream), predictor, merges, corrections
    except (OSError, ValueError, RuntimeError) as exc:
        raise _Failed(1, str(exc)) from exc


def _oracle(config: Config, predictor: Any, truth: list[Utterance]) -> tuple[list[str], Any]:
    """The text oracle, with the replay's classifier or one loaded now (returned for reuse)."""
    try:
        if predictor is None:
            from stream.stages.classifier import load_predictor

            checkpoint = config.resolve_path(config.classifier.checkpoint)
            predictor = load_predictor(
                str(checkpoint), device=config.classifier.device, text_dtype=config.classifier.text_dtype
            )
        return oracle_labels(predictor, truth, batch=config.classifier.max_batch), predictor
    except (ImportError, OSError, ValueError, RuntimeError) as exc:
        raise _Failed(1, f"text oracle unavailable ({exc}); use --no-oracle to skip it") from exc
