"""Throughput: the replay real-time factor with ``--fast`` per ASR model, where the time goes, and the floor.

For each model the spoken test set (``bench.make_testset``) is replayed through the real service in
this process (``stream.evaluation.replay``: models loaded and warmed first, then ``run_service`` as fast
as it goes). RTF = pipeline seconds / audio seconds. The floor is faster-whisper alone on the same
file with the same model, device and decoding options: once over the whole file (30 s windows, the
silence included) and once with faster-whisper's own Silero VAD filter. Stage times come from the
events (``transcript.asr_ms``) and the final ``stats`` event (classifier real-time factor).

Usage: ``python -m bench.throughput [--models tiny.en,base] [--n 8]``; ``--full`` uses 40 utterances.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    DEFAULT_CHECKPOINT,
    REPO,
    RESULTS,
    checkpoint_or_untrained,
    markdown_table,
    setup_logging,
    write_result,
)
from stream.records import SAMPLE_RATE_HZ

logger = logging.getLogger(__name__)

NOTE = (
    "stage times can overlap (VAD, decoding and the classifier run beside Whisper), so other_s = pipeline - "
    "ASR - classifier may be negative; the classifier is re-timed offline on the same utterances"
)


# The service's decoding options (stream.stages.whisper), for the floor and the profile.
OPTIONS: dict[str, Any] = {"language": "en", "beam_size": 1, "temperature": 0.0, "condition_on_previous_text": False}


def whisper_alone(model: Any, audio: np.ndarray, *, vad_filter: bool) -> float:
    """Seconds faster-whisper needs for all of ``audio`` (warmed up outside the timing)."""
    list(model.transcribe(audio[:SAMPLE_RATE_HZ], vad_filter=vad_filter, **OPTIONS)[0])  # warm-up
    t0 = time.perf_counter()
    segments, _ = model.transcribe(audio, vad_filter=vad_filter, **OPTIONS)
    list(segments)
    return time.perf_counter() - t0


def asr_profile(model: Any, clips: list[np.ndarray], service_transcriber: Any = None) -> dict[str, float]:
    """Mean ms per utterance: faster-whisper's transcribe (30 s window), the service's transcriber
    (``stream.stages.whisper`` with the configured ``asr.pad_s``), and the encoder alone on a 30 s padded
    input vs on the utterance alone."""
    import ctranslate2

    fe = model.feature_extractor
    totals = {"service_transcribe_ms": 0.0, "fw_transcribe_30s_ms": 0.0, "encoder_30s_ms": 0.0,
              "encoder_trimmed_ms": 0.0}  # fmt: skip
    for clip in clips:
        t0 = time.perf_counter()
        if service_transcriber is not None:
            service_transcriber.transcribe(clip)
        ta = time.perf_counter()
        list(model.transcribe(clip, vad_filter=False, without_timestamps=True, **OPTIONS)[0])
        t1 = time.perf_counter()
        padded = np.zeros(fe.n_samples, dtype=np.float32)
        padded[: min(clip.size, fe.n_samples)] = clip[: fe.n_samples]
        mel30 = fe(padded, padding=0)[:, : fe.nb_max_frames]
        model.model.encode(ctranslate2.StorageView.from_array(mel30[None].astype(np.float32)))
        t2 = time.perf_counter()
        frames = min(fe.nb_max_frames, -(-clip.size // fe.hop_length // 2) * 2)  # even: the encoder halves it
        mel = fe(clip[: fe.n_samples], padding=0)[:, :frames]
        model.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None], dtype=np.float32)))
        t3 = time.perf_counter()
        totals["service_transcribe_ms"] += 1000 * (ta - t0)
        totals["fw_transcribe_30s_ms"] += 1000 * (t1 - ta)
        totals["encoder_30s_ms"] += 1000 * (t2 - t1)
        totals["encoder_trimmed_ms"] += 1000 * (t3 - t2)
    if service_transcriber is None:
        totals.pop("service_transcribe_ms")
    return {k: round(v / max(1, len(clips)), 1) for k, v in totals.items()}


def _classifier_seconds(predictor: Any, events: list[dict[str, Any]], audio: Any) -> float:
    rows = [e["data"] for e in events if e["type"] == "emotion"]
    t0 = time.perf_counter()
    for d in rows:
        clip = audio[round(d["start_s"] * SAMPLE_RATE_HZ) : round(d["end_s"] * SAMPLE_RATE_HZ)]
        predictor.predict([d["text"] or None], [clip if predictor.uses_audio else None])
    return time.perf_counter() - t0


def run_model(model_name: str, wav: Path, truth_csv: Path, checkpoint: Path) -> dict[str, Any]:
    from stream.config import load_config
    from stream.evaluation import build_report, load_truth, predictions_from_events, read_jsonl, replay
    from training.audio import load_audio

    audio_s = load_audio(wav).size / SAMPLE_RATE_HZ
    with tempfile.TemporaryDirectory(prefix="emostream-throughput-") as tmp:
        overrides = {"asr.model": model_name, "asr.device": "cpu", "classifier.device": "cpu",
                     "classifier.checkpoint": str(checkpoint), "log.event_log_dir": tmp}  # fmt: skip
        config = load_config(REPO / "config.toml", **overrides)
        events_path = Path(tmp) / "events.jsonl"
        result = replay(config, wav, events_path)
        events = read_jsonl(events_path)
    report = build_report(predictions_from_events(events), load_truth([truth_csv]), extra={})
    asr_s = sum(float(e["data"].get("asr_ms", 0.0)) for e in events if e["type"] == "transcript") / 1000
    speech_s = sum(e["data"]["end_s"] - e["data"]["start_s"] for e in events
                   if e["type"] == "speech" and e["data"].get("state") == "end")  # fmt: skip
    # Transcript and emotion events leave together after classification, so the classifier's share is
    # re-timed here on the same utterances (text + audio span), one at a time as in a live stream.
    classifier_s = _classifier_seconds(result.predictor, events, load_audio(wav))
    from stream.config import ASRConfig
    from stream.stages.whisper import WhisperTranscriber

    # The service's transcriber; its faster-whisper model alone gives the floor and the profile.
    service_asr = WhisperTranscriber.load(ASRConfig(model=model_name, device="cpu"))
    whisper = service_asr.model
    audio = load_audio(wav)
    floor_full = whisper_alone(whisper, audio, vad_filter=False)
    floor_vad = whisper_alone(whisper, audio, vad_filter=True)
    clips = [audio[round(e["data"]["start_s"] * SAMPLE_RATE_HZ) : round(e["data"]["end_s"] * SAMPLE_RATE_HZ)]
             for e in events if e["type"] == "emotion"]  # fmt: skip
    service_asr.transcribe(audio[:SAMPLE_RATE_HZ])  # warm-up
    profile = asr_profile(whisper, clips, service_asr)
    features_ms = 0.0
    if result.predictor.uses_audio and clips:
        t0 = time.perf_counter()
        for clip in clips:
            result.predictor.audio_features([clip])
        features_ms = 1000 * (time.perf_counter() - t0) / len(clips)
    profile["audio_features_ms"] = round(features_ms, 1)
    run_s = result.run_s
    return {
        "model": model_name,
        "audio_s": round(audio_s, 2),
        "speech_s": round(speech_s, 2),
        "load_s": round(result.load_s, 2),
        "pipeline_s": round(run_s, 2),
        "rtf": round(run_s / audio_s, 4),
        "asr_busy_s": round(asr_s, 2),
        "classifier_busy_s": round(classifier_s, 2),
        "other_s": round(run_s - asr_s - classifier_s, 2),
        "whisper_alone_s": round(floor_full, 2),
        "whisper_alone_rtf": round(floor_full / audio_s, 4),
        "whisper_vad_s": round(floor_vad, 2),
        "whisper_vad_rtf": round(floor_vad / audio_s, 4),
        "ratio_to_whisper_alone": round(run_s / floor_full, 2),
        "ratio_to_whisper_vad": round(run_s / floor_vad, 2),
        "profile_ms_per_utterance": profile,
        "utterances": report["counts"],
        "wer_matched": report["wer"]["matched"],
        "detection": report["detection"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="tiny.en,base", help="ASR models (default tiny.en,base)")
    p.add_argument("--n", type=int, default=8, help="utterances in the test set (default 8, about 50 s)")
    p.add_argument("--checkpoint", type=Path, default=None, help="classifier (default: the shipped one)")
    p.add_argument("--full", action="store_true", help="40 utterances (about 4 minutes of audio)")
    args = p.parse_args(argv)
    setup_logging()
    from bench.make_testset import build_testset

    n = 40 if args.full else args.n
    ts = build_testset(RESULTS / f"testset-{n}", n=n)
    checkpoint, source = checkpoint_or_untrained(args.checkpoint or DEFAULT_CHECKPOINT)
    results = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        logger.info("throughput: %s on %.0f s of speech", name, ts.duration_s)
        results.append(run_model(name, ts.wav, ts.truth_csv, checkpoint))
    cols = ["model", "audio_s", "pipeline_s", "rtf", "whisper_alone_rtf", "ratio_to_whisper_alone", "whisper_vad_rtf",
            "ratio_to_whisper_vad", "asr_busy_s", "classifier_busy_s", "other_s", "wer_matched"]  # fmt: skip
    table = markdown_table(results, cols)
    profile_rows = [{"model": r["model"], **r["profile_ms_per_utterance"]} for r in results]
    table += "\nWhere an utterance's time goes (mean ms per utterance)\n\n" + markdown_table(profile_rows)
    print(table)
    path = write_result("throughput", {
        "settings": {"utterances": ts.n_utterances, "audio_s": ts.duration_s, "checkpoint": source,
                     "replay": "in-process run_service, --fast, no server, models loaded and warmed before timing",
                     "note": NOTE},
        "results": results,
        "table": table,
    })  # fmt: skip
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
