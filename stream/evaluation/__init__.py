"""Offline evaluation of a replay against ground truth (``emostream evaluate``).

``emostream evaluate MEDIA --truth CSV`` replays ``MEDIA`` through the real pipeline as fast as it goes,
reads the ``emotion`` events it produced and aligns them to ground-truth utterances by time overlap.
Everything after the replay is pure and tested without I/O:

* :mod:`~stream.evaluation.truth`: ground-truth CSVs (MELD's, or ``start_s,end_s,text,emotion``);
* :mod:`~stream.evaluation.replay`: the replay and the predicted utterances read from its events;
* :mod:`~stream.evaluation.scoring`: time alignment, word error rate, emotion metrics;
* :mod:`~stream.evaluation.report`: the report (JSON and markdown);
* :mod:`~stream.evaluation.cli`: the command.
"""

from stream.evaluation.replay import (
    Replay,
    media_duration_s,
    oracle_labels,
    predictions_from_events,
    read_jsonl,
    replay,
    speaker_corrections,
    speaker_merges,
)
from stream.evaluation.report import build_report, report_markdown, speaker_report
from stream.evaluation.scoring import (
    EmotionScores,
    Match,
    Utterance,
    WordErrors,
    align,
    boundaries_kept,
    emotion_scores,
    normalise_words,
    word_errors,
)
from stream.evaluation.truth import TruthError, load_truth, parse_timestamp, read_truth_rows

__all__ = [
    "EmotionScores",
    "Match",
    "Replay",
    "TruthError",
    "Utterance",
    "WordErrors",
    "align",
    "boundaries_kept",
    "build_report",
    "emotion_scores",
    "load_truth",
    "media_duration_s",
    "normalise_words",
    "oracle_labels",
    "parse_timestamp",
    "predictions_from_events",
    "read_jsonl",
    "read_truth_rows",
    "replay",
    "report_markdown",
    "speaker_corrections",
    "speaker_merges",
    "speaker_report",
    "word_errors",
]
