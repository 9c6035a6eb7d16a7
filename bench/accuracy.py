"""Accuracy of a replay: ``emostream evaluate`` on the spoken MELD dev test set, per ASR model.

Runs exactly what ``emostream evaluate testset.wav --truth truth.csv`` runs (``stream.evaluation``:
in-process ``--fast`` replay, time-overlap alignment, WER, emotion metrics, the text oracle) for each
ASR model and tabulates the headline figures. The speech is espeak-ng TTS, so the emotion figures
measure the text branch through ASR and segmentation, not vocal emotion.

Usage: ``python -m bench.accuracy [--models tiny.en,base] [--n 20]``; ``--full`` uses 100 utterances.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import (
    REPO,
    markdown_table,
    models_of,
    replay_parser,
    replay_setup,
    write_result,
)
from bench.latency import parse_setting

logger = logging.getLogger(__name__)


def run_model(
    model: str, wav: Path, truth_csv: Path, checkpoint: Path, *, settings: Sequence[str] = ()
) -> dict[str, Any]:
    from stream.config import load_config
    from stream.evaluation import (
        build_report,
        load_truth,
        media_duration_s,
        oracle_labels,
        predictions_from_events,
        read_jsonl,
        replay,
    )

    truth = load_truth([truth_csv])
    with tempfile.TemporaryDirectory(prefix="emostream-accuracy-") as tmp:
        overrides = {"asr.model": model, "asr.device": "cpu", "classifier.device": "cpu",
                     "classifier.checkpoint": str(checkpoint), "log.event_log_dir": tmp,
                     **dict(parse_setting(x) for x in settings)}  # fmt: skip
        config = load_config(REPO / "config.toml", **overrides)
        result = replay(config, wav, Path(tmp) / "events.jsonl")
        events = read_jsonl(Path(tmp) / "events.jsonl")
    oracle = oracle_labels(result.predictor, truth)
    audio_s = media_duration_s(wav) or 0.0
    extra = {"asr_model": model, "replay": {"wall_s": result.run_s, "audio_s": audio_s,
                                             "rtf": result.run_s / audio_s if audio_s else None}}  # fmt: skip
    return build_report(predictions_from_events(events), truth, oracle=oracle, extra=extra)


def main(argv: Sequence[str] | None = None) -> int:
    p = replay_parser("accuracy", __doc__, default_n=20, n_help="20", full_n=100, full_help="100 utterances")
    args, ts, checkpoint, source = replay_setup(p, argv)
    reports, rows = [], []
    for model in models_of(args.models):
        logger.info("accuracy: %s on %d utterances", model, ts.n_utterances)
        r = run_model(model, ts.wav, ts.truth_csv, checkpoint, settings=args.set)
        reports.append(r)
        oracle = r["text_oracle"]["matched"]
        rows.append({
            "model": model,
            "detection P": r["detection"]["precision"],
            "detection R": r["detection"]["recall"],
            "WER matched": r["wer"]["matched"],
            "WER overall": r["wer"]["overall"],
            "emotion wF1": r["emotion"]["weighted_f1"],
            "oracle wF1": oracle["weighted_f1"],
            "emotion macro-F1": r["emotion"]["macro_f1"],
            "oracle macro-F1": oracle["macro_f1"],
            "n scored": r["emotion"]["n"],
        })  # fmt: skip
    table = markdown_table(rows)
    print(table)
    path = write_result(args.out, {
        "settings": {"utterances": ts.n_utterances, "audio_s": ts.duration_s, "checkpoint": source,
                     "test_set": "MELD dev utterances spoken by espeak-ng (TTS), seed 0",
                     "service_settings": args.set},
        "results": reports,
        "table": table,
    })  # fmt: skip
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
