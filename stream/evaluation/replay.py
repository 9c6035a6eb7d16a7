"""The replay side of an evaluation: run the real service on a recording, read back what it said.

:func:`replay` runs ``emostream run --fast --no-server --jsonl`` in this process with the models loaded
(and timed) first; :func:`predictions_from_events` turns the events into predicted utterances.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream.config import Config
from stream.evaluation.scoring import Utterance
from stream.records import LABELS

__all__ = [
    "Replay",
    "media_duration_s",
    "oracle_labels",
    "predictions_from_events",
    "read_jsonl",
    "replay",
    "speaker_corrections",
    "speaker_merges",
]

logger = logging.getLogger(__name__)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
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


def speaker_merges(events: Iterable[Mapping[str, Any]], *, stream: str | None = None) -> dict[str, str]:
    """``speaker`` merge events of one stream as label -> the label it was found to be."""
    merged: dict[str, str] = {}
    for e in events:
        d = e.get("data") or {}
        if e.get("type") != "speaker" or d.get("action") != "merged":
            continue
        if stream is not None and e.get("stream") != stream:
            continue
        if isinstance(d.get("speaker"), str) and isinstance(d.get("into"), str):
            merged[d["speaker"]] = d["into"]
    return merged


def speaker_corrections(events: Iterable[Mapping[str, Any]], *, stream: str | None = None) -> dict[str, str]:
    """``speaker`` correction events of one stream as utterance_id -> its label now (the latest wins)."""
    fixed: dict[str, str] = {}
    for e in events:
        d = e.get("data") or {}
        if e.get("type") != "speaker" or d.get("action") != "corrected":
            continue
        if stream is not None and e.get("stream") != stream:
            continue
        if isinstance(d.get("utterance_id"), str) and isinstance(d.get("into"), str):
            fixed[d["utterance_id"]] = d["into"]
    return fixed


def predictions_from_events(events: Iterable[Mapping[str, Any]], *, stream: str | None = None) -> list[Utterance]:
    """The utterances one stream produced, in time order.

    An utterance is a ``speech`` end event (what the segmenter found), joined by ``utterance_id`` with
    its ``transcript`` text and its ``emotion`` label and ``latency_ms``; one without an emotion (e.g.
    its classification failed) keeps ``emotion=None``. Events with no ``speech`` end (an emotion-only
    file) count by their ``emotion`` event. ``stream=None`` accepts the only stream there is and raises
    ``ValueError`` when there are several.
    """
    kinds = ("speech", "transcript", "emotion")  # `speaker` events: see speaker_merges
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
            if e["type"] in ("transcript", "emotion") and isinstance(d.get("speaker"), str):
                slot["speaker"] = d["speaker"]
            if e["type"] == "emotion":
                slot["label"] = d.get("label") if d.get("label") in LABELS else None
                latency = d.get("latency_ms")
                slot["latency_ms"] = float(latency) if isinstance(latency, int | float) else None
                branches = d.get("branches")
                if isinstance(branches, Mapping):
                    slot["branches"] = tuple(
                        (str(k), str(v)) for k, v in sorted(branches.items()) if k in ("text", "audio") and v in LABELS
                    )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{e['type']} event seq {e.get('seq')} has no usable start_s/end_s: {exc!r}") from exc
    out = [
        Utterance(
            v["start_s"],
            v["end_s"],
            v.get("text", ""),
            v.get("label"),
            uid,
            v.get("latency_ms"),
            v.get("speaker"),
            v.get("branches", ()),
        )
        for uid, v in found.items()
        if "start_s" in v
    ]
    return sorted(out, key=lambda u: (u.start_s, u.end_s))


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

    from stream.models import load_models, load_speaker_stage
    from stream.service import RunOptions, run_service
    from training.weights import ModelError

    cfg = dataclasses.replace(
        config,
        audio=dataclasses.replace(config.audio, replay_fast=True),
        server=dataclasses.replace(config.server, enabled=False),
    )
    t0 = time.perf_counter()
    # Lazy parts (the audio-feature encoder, first-call allocations) load now, not inside the timed run.
    transcriber, predictor = load_models(cfg)
    # faster-whisper logs every utterance at INFO; the report is this command's output.
    logging.getLogger("faster_whisper").setLevel(max(logging.WARNING, logging.getLogger().level))
    t1 = time.perf_counter()
    options = RunOptions(sources=(str(media),), jsonl=str(events_path), exit_when_done=True, quiet=True)
    speakers = None
    if cfg.speakers.enabled:
        try:
            speakers = load_speaker_stage(cfg)
        except ModelError as exc:  # e.g. Resemblyzer not installed: scored without speaker labels
            logger.warning("no speaker labels in this replay: %s", exc)
    status = asyncio.run(run_service(cfg, options, models=(transcriber, predictor), speakers=speakers))
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
