"""The versioned event protocol: the one place that defines what subscribers receive and may send.

Every event is one JSON object::

    {"v": 2, "type": T, "seq": N, "stream": ID, "ts": unix_seconds, "data": {...}}

``seq`` is strictly increasing per service run (assigned by :class:`stream.events.bus.EventBus`).
``web/protocol.js`` mirrors these names; ``docs/protocol.md`` and ``docs/event.schema.json``
document them, and the tests keep the three in step. What clients send is parsed by
:mod:`stream.client_messages`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from stream.records import LABELS, Classified, PredictionLike, SpeechBegan, Transcribed, Utterance

__all__ = [
    "CLIENT_TYPES",
    "DEFAULT_DESCRIPTION",
    "CONNECTION_STREAM",
    "EVENT_TYPES",
    "LABELS",
    "LABEL_COLORS",
    "MAX_SPEAKER_NAME_CHARS",
    "MAX_STREAM_FILTER",
    "MAX_STREAM_ID_CHARS",
    "PROTOCOL_VERSION",
    "SERVICE_STREAM",
    "SPEAKER_ACTIONS",
    "Event",
    "ProtocolError",
    "Stats",
    "emotion_data",
    "end_data",
    "error_data",
    "hello_data",
    "lagged_data",
    "prediction_data",
    "service_description",
    "speech_end_data",
    "speaker_corrected_data",
    "speaker_merged_data",
    "speaker_named_data",
    "speech_start_data",
    "transcript_data",
    "valid_speaker_label",
]

# 2: speakers -- `transcript` and `emotion` carry `speaker`, the `speaker` event, the `name_speaker` message.
PROTOCOL_VERSION: Final = 2


# Colours the dashboard uses; sent in ``hello`` so that clients hard-code nothing.
LABEL_COLORS: Final = {
    "anger": "#d7263d",
    "disgust": "#6a8d2f",
    "fear": "#7b4fb8",
    "joy": "#f2b134",
    "neutral": "#8a94a6",
    "sadness": "#2e6fd8",
    "surprise": "#f26b38",
}

# Events that concern the whole service rather than one source use this stream id.
SERVICE_STREAM: Final = "_service"

# Events that only one connection sees (``hello``, ``lagged``, ``pong``, ``error`` replies to what that
# client sent) use this stream id. They are never logged nor replayed, and their ``seq`` is a watermark
# (the last seq the service had assigned when they were made), not an id of their own: clients must not
# use it for ``resume`` or de-duplication.
CONNECTION_STREAM: Final = "_connection"

EVENT_TYPES: Final = (
    "hello",  # on connect: labels, colours, streams, model ids
    "speech",  # state start/end of an utterance
    "transcript",  # Whisper's text for an utterance
    "emotion",  # the classifier's decision for an utterance
    "stats",  # queue depths, drops, real-time factor
    "error",  # code + message; a stream or the service hit a problem
    "end",  # a stream's source finished
    "lagged",  # this subscriber lost `dropped` events because it read too slowly
    "pong",  # the reply to a client's {"type": "ping"}
    "speaker",  # a speaker was named, found to be another (merged), or an utterance re-assigned (corrected)
)

CLIENT_TYPES: Final = ("subscribe", "resume", "ping", "name_speaker")

# `speaker` event actions.
SPEAKER_ACTIONS: Final = ("named", "merged", "corrected")
MAX_SPEAKER_NAME_CHARS: Final = 64
# A `subscribe` filter names at most this many streams, each id at most this long.
MAX_STREAM_FILTER: Final = 256
MAX_STREAM_ID_CHARS: Final = 128

# Codes used in ``error`` events.
ERROR_CODES: Final = (
    "bad_message",  # a client sent something we could not parse
    "bad_request",  # a well-formed client message with invalid fields
    "resume_unavailable",  # the requested seq is not in this run's event log
    "source_failed",  # a source could not be opened or failed mid-run
    "device_lost",  # the microphone disappeared; retrying
    "stage_failed",  # a stage raised on one utterance
    "internal",
)


class ProtocolError(ValueError):
    """A message does not follow the protocol."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Event:
    """One event, as sent to every subscriber and written to the event log."""

    type: str
    seq: int
    stream: str
    ts: float
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": PROTOCOL_VERSION,
            "type": self.type,
            "seq": self.seq,
            "stream": self.stream,
            "ts": self.ts,
            "data": dict(self.data),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> Event:
        """Rebuild an event (e.g. from the event log); raises :class:`ProtocolError` when malformed."""
        if obj.get("v") != PROTOCOL_VERSION:
            raise ProtocolError("bad_message", f"unsupported protocol version {obj.get('v')!r}")
        try:
            seq = obj["seq"]
            kind = obj["type"]
            stream = obj["stream"]
            ts = obj["ts"]
            data = obj["data"]
        except KeyError as exc:
            raise ProtocolError("bad_message", f"event lacks {exc.args[0]!r}") from exc
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise ProtocolError("bad_message", f"seq must be a non-negative integer, got {seq!r}")
        if not isinstance(kind, str) or not isinstance(stream, str) or not isinstance(data, dict):
            raise ProtocolError("bad_message", "type and stream must be strings and data an object")
        if not isinstance(ts, int | float) or isinstance(ts, bool) or not math.isfinite(ts):
            raise ProtocolError("bad_message", f"ts must be a finite number, got {ts!r}")
        return cls(type=kind, seq=seq, stream=stream, ts=float(ts), data=data)


# Event payloads ------------------------------------------------------------------------------------
# Every event's ``data`` is built by one of these functions and nowhere else; times are rounded to
# the millisecond, scores to 6 decimals.


def _span(utt: Utterance) -> dict[str, Any]:
    return {"utterance_id": utt.utterance_id, "start_s": round(utt.start_s, 3), "end_s": round(utt.end_s, 3)}


def speech_start_data(began: SpeechBegan) -> dict[str, Any]:
    """``speech`` (state ``start``): an utterance was confirmed."""
    return {"state": "start", "utterance_id": began.utterance_id, "t_s": round(began.start_s, 3)}


def speech_end_data(utt: Utterance) -> dict[str, Any]:
    """``speech`` (state ``end``): the utterance is complete; ``forced`` when cut at its maximum length."""
    return {
        "state": "end",
        "utterance_id": utt.utterance_id,
        "t_s": round(utt.end_s, 3),
        "start_s": round(utt.start_s, 3),
        "end_s": round(utt.end_s, 3),
        "forced": utt.forced,
    }


def transcript_data(item: Transcribed) -> dict[str, Any]:
    """``transcript``: Whisper's text for an utterance (``item.transcript`` must be set)."""
    t = item.transcript
    if t is None:
        raise ValueError(f"{item.utterance.utterance_id} has no transcript: {item.error}")
    return {
        **_span(item.utterance),
        "speaker": item.speaker,
        "text": t.text,
        "language": t.language,
        "avg_logprob": t.avg_logprob,
        "no_speech_prob": t.no_speech_prob,
        "dropped": t.dropped,
        "asr_ms": round(item.asr_s * 1000, 1),
    }


def prediction_data(pred: PredictionLike) -> dict[str, Any]:
    """A prediction's ``label``, ``scores`` (normalised to sum to 1) and ``modalities``; plus ``branches``
    (each branch's own label) when a fusion checkpoint reports them."""
    total = sum(float(v) for v in pred.scores.values()) or 1.0
    branches = getattr(pred, "branches", None)
    return {
        "label": pred.label,
        "scores": {k: round(float(v) / total, 6) for k, v in pred.scores.items()},
        "modalities": list(pred.modalities),
        **({"branches": dict(branches)} if branches else {}),
    }


def emotion_data(out: Classified, *, latency_s: float) -> dict[str, Any]:
    """``emotion``: the classifier's decision (``out.prediction`` must be set); scores sum to 1."""
    pred = out.prediction
    item = out.item
    if pred is None:
        raise ValueError(f"{item.utterance.utterance_id} has no prediction: {out.error}")
    data = {
        **_span(item.utterance),
        "speaker": item.speaker,
        "text": item.transcript.text if item.transcript is not None else "",
        **prediction_data(pred),
        "latency_ms": round(max(0.0, latency_s) * 1000, 1),
    }
    if out.context_ids is not None:  # the classifier read past context: which utterances
        data["context"] = list(out.context_ids)
    return data


def speaker_named_data(speaker: str, name: str) -> dict[str, Any]:
    """``speaker`` (action ``named``): call ``speaker`` ``name`` from now on."""
    return {"action": "named", "speaker": speaker, "name": name}


def speaker_merged_data(speaker: str, into: str, utterance: Utterance) -> dict[str, Any]:
    """``speaker`` (action ``merged``): ``speaker``'s utterances were ``into``'s; ``utterance`` showed it."""
    return {"action": "merged", "speaker": speaker, "into": into, "utterance_id": utterance.utterance_id}


def speaker_corrected_data(speaker: str, into: str, utterance_id: str) -> dict[str, Any]:
    """``speaker`` (action ``corrected``): utterance ``utterance_id``, sent as ``speaker``'s, is ``into``'s."""
    return {"action": "corrected", "speaker": speaker, "into": into, "utterance_id": utterance_id}


def error_data(code: str, message: str, *, utterance: Utterance | None = None) -> dict[str, Any]:
    """``error``: ``code`` from :data:`ERROR_CODES`; about one utterance when ``utterance`` is given."""
    return {"code": code, "message": message, **(_span(utterance) if utterance is not None else {})}


def end_data(reason: str, *, audio_s: float) -> dict[str, Any]:
    """``end``: a stream finished (``eof``, ``error`` or ``stopped``) after ``audio_s`` of audio."""
    return {"reason": reason, "audio_s": round(audio_s, 3)}


def lagged_data(dropped: int, *, first_seq: int | None, last_seq: int | None) -> dict[str, Any]:
    """``lagged``: this subscriber lost ``dropped`` events, ``first_seq`` to ``last_seq``."""
    return {"dropped": dropped, "first_seq": first_seq, "last_seq": last_seq}


@dataclass(frozen=True, slots=True)
class Stats:
    """``stats``: queue depths, drops, real-time factors and counts (``extra``: e.g. the hub's)."""

    queues: Mapping[str, int]
    queue_limits: Mapping[str, int]
    drops: Mapping[str, float | int]
    rtf: Mapping[str, float]
    asr_paths: Mapping[str, int]  # how Whisper decoded: trimmed, padded, loop_redone, unsure_redone, and the
    # end-of-turn readings kept without their redo: loop_kept, unsure_kept
    streams: Mapping[str, Mapping[str, float]]  # each source's own figures (e.g. dropped_s)
    utterances: int
    batches: int
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_data(self) -> dict[str, Any]:
        return {
            **self.extra,
            "queues": dict(self.queues),
            "queue_limits": dict(self.queue_limits),
            "drops": dict(self.drops),
            "rtf": dict(self.rtf),
            "asr_paths": dict(self.asr_paths),
            "streams": {k: dict(v) for k, v in self.streams.items()},
            "utterances": self.utterances,
            "batches": self.batches,
        }


def service_description(
    *, labels: Sequence[str], streams: Iterable[tuple[str, str, str]], model_ids: Mapping[str, str]
) -> dict[str, Any]:
    """The service's part of ``hello``: labels and colours, ``(id, kind, name)`` of each stream, model ids."""
    return {
        "labels": list(labels),
        "colors": dict(LABEL_COLORS),
        "streams": [{"id": i, "kind": kind, "name": name} for i, kind, name in streams],
        "model_ids": dict(model_ids),
    }


# What ``hello`` says when the service cannot describe itself.
DEFAULT_DESCRIPTION: Final = service_description(labels=LABELS, streams=(), model_ids={})


def hello_data(
    description: Mapping[str, Any], *, run_id: str, last_seq: int | None, limits: Mapping[str, float]
) -> dict[str, Any]:
    """``hello``: the service's description, then this connection's protocol, run, watermark and limits."""
    return {
        **description,
        "protocol": PROTOCOL_VERSION,
        "run_id": run_id,
        "last_seq": last_seq,
        "limits": dict(limits),
    }


# Speaker labels the speaker stage hands out and clients may name.
_SPEAKER_LABEL_RE: Final = re.compile(r"S[1-9][0-9]{0,3}")


def valid_speaker_label(label: object) -> bool:
    """``S1``, ``S2``, ... -- the labels the speaker stage hands out."""
    return isinstance(label, str) and _SPEAKER_LABEL_RE.fullmatch(label) is not None
