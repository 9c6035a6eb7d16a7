"""The versioned event protocol: the one place that defines what subscribers receive and may send.

Every event is one JSON object::

    {"v": 2, "type": T, "seq": N, "stream": ID, "ts": unix_seconds, "data": {...}}

``seq`` is strictly increasing per service run (assigned by :class:`stream.events.bus.EventBus`).
``web/protocol.js`` mirrors these names; ``docs/protocol.md`` and ``docs/event.schema.json``
document them, and the tests keep the three in step.
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
    "PROTOCOL_VERSION",
    "SERVICE_STREAM",
    "SPEAKER_ACTIONS",
    "ClientMessage",
    "Event",
    "ProtocolError",
    "Stats",
    "emotion_data",
    "end_data",
    "error_data",
    "hello_data",
    "lagged_data",
    "parse_client_message",
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
    asr_paths: Mapping[str, int]  # how Whisper decoded: trimmed, padded, loop_redone, unsure_redone
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


@dataclass(frozen=True, slots=True)
class ClientMessage:
    """A parsed message from a subscriber."""

    type: str
    streams: tuple[str, ...] | None = None  # subscribe: None = all streams
    after_seq: int | None = None  # resume
    stream: str | None = None  # name_speaker
    speaker: str | None = None  # name_speaker: "S1", "S2", ...
    name: str | None = None  # name_speaker: what to call that speaker


MAX_STREAM_FILTER: Final = 256
MAX_STREAM_ID_CHARS: Final = 128
# The largest client frame any config allows (``server.max_message_bytes`` <= 1 MiB): the parser refuses
# bigger ones itself, so it stays bounded even when called without the websocket layer's limit.
MAX_CLIENT_MESSAGE_BYTES: Final = 1 << 20
# Error texts quote what the client sent; keep them short, whatever it sent.
_MAX_QUOTE_CHARS: Final = 60


def _quote(value: Any) -> str:
    """A short description of a client-supplied value for an error message."""
    if value is None or isinstance(value, str | int | float | bool):
        text = repr(value) if not isinstance(value, int) or abs(value) < 10**40 else "a huge integer"
    else:
        # repr of a client's nested containers could be huge (or recurse deeply): name the type only.
        text = f"a JSON {'array' if isinstance(value, list) else 'object' if isinstance(value, dict) else 'value'}"
    return text if len(text) <= _MAX_QUOTE_CHARS else text[: _MAX_QUOTE_CHARS - 3] + "..."


def _valid_stream_id(s: object) -> bool:
    if not isinstance(s, str) or not 0 < len(s) <= MAX_STREAM_ID_CHARS:
        return False
    try:
        s.encode("utf-8")  # a JSON escape such as "\ud800" yields a lone surrogate, which no event could carry
    except UnicodeEncodeError:
        return False
    return True


def parse_client_message(raw: str | bytes | bytearray | memoryview) -> ClientMessage:
    """Parse one client frame; anything unexpected raises :class:`ProtocolError` with a reason.

    Accepted::

        {"type": "subscribe", "streams": ["mic", "ep1"]}   # or "streams": null for all
        {"type": "resume", "after_seq": 41}
        {"type": "ping"}
        {"type": "name_speaker", "stream": "ep1", "speaker": "S1", "name": "Ross"}

    Frames over :data:`MAX_CLIENT_MESSAGE_BYTES` are refused; error messages stay short (they never
    echo a whole payload back).
    """
    if isinstance(raw, bytearray | memoryview):
        raw = bytes(raw)
    if isinstance(raw, str):
        # len() counts characters; the UTF-8 size is at most 4 per character, so encode only near the limit.
        size = len(raw) if len(raw) * 4 <= MAX_CLIENT_MESSAGE_BYTES else len(raw.encode("utf-8", "surrogatepass"))
    elif isinstance(raw, bytes):
        size = len(raw)
    else:
        raise ProtocolError("bad_message", f"message must be text or bytes, got {type(raw).__name__}")
    if size > MAX_CLIENT_MESSAGE_BYTES:
        raise ProtocolError("bad_message", f"message of {size} bytes exceeds the {MAX_CLIENT_MESSAGE_BYTES}-byte limit")
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("bad_message", "message is not valid UTF-8") from exc
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("bad_message", f"message is not valid JSON: {str(exc)[:120]}") from exc
    if not isinstance(obj, dict):
        raise ProtocolError("bad_message", "message must be a JSON object")
    kind = obj.get("type")
    if not isinstance(kind, str) or kind not in CLIENT_TYPES:
        raise ProtocolError(
            "bad_request", f"unknown message type {_quote(kind)}; expected one of {', '.join(CLIENT_TYPES)}"
        )
    if kind == "ping":
        return ClientMessage("ping")
    if kind == "subscribe":
        return _parse_subscribe(obj)
    if kind == "name_speaker":
        return _parse_name_speaker(obj)
    after = obj.get("after_seq")
    if not isinstance(after, int) or isinstance(after, bool) or after < -1 or after > 2**53:
        raise ProtocolError("bad_request", f"after_seq must be an integer in [-1, 2**53], got {_quote(after)}")
    return ClientMessage("resume", after_seq=after)


# The HTTP API's `POST /api/classify` body: {"text": "..."} (same size limit as a client message).
MAX_CLASSIFY_TEXT_CHARS: Final = 2000


def parse_classify_request(raw: str | bytes) -> str:
    """The sentence of a ``{"text": "..."}`` request, stripped; :class:`ProtocolError` says what is wrong."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("bad_message", "body is not valid UTF-8") from exc
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("bad_message", f"body is not valid JSON: {str(exc)[:120]}") from exc
    if not isinstance(obj, dict):
        raise ProtocolError("bad_message", 'body must be a JSON object like {"text": "..."}')
    text = obj.get("text")
    if not isinstance(text, str) or not _valid_text(text):
        raise ProtocolError("bad_request", f"text must be a string, got {_quote(text)}")
    text = " ".join(text.split())
    if not text:
        raise ProtocolError("bad_request", "text is empty; type a sentence")
    if len(text) > MAX_CLASSIFY_TEXT_CHARS:
        raise ProtocolError("bad_request", f"text has {len(text)} characters; at most {MAX_CLASSIFY_TEXT_CHARS}")
    return text


def _valid_text(s: str) -> bool:
    try:
        s.encode("utf-8")  # a lone surrogate from a JSON escape cannot be classified or logged
    except UnicodeEncodeError:
        return False
    return True


def _parse_subscribe(obj: Mapping[str, Any]) -> ClientMessage:
    streams = obj.get("streams")
    if streams is None:
        return ClientMessage("subscribe", streams=None)
    if not isinstance(streams, list) or len(streams) > MAX_STREAM_FILTER:
        raise ProtocolError("bad_request", f"streams must be a list of at most {MAX_STREAM_FILTER} stream ids")
    if not all(_valid_stream_id(s) for s in streams):
        raise ProtocolError(
            "bad_request", f"each stream id must be a valid string of 1-{MAX_STREAM_ID_CHARS} characters"
        )
    return ClientMessage("subscribe", streams=tuple(dict.fromkeys(streams)))


_SPEAKER_LABEL_RE: Final = re.compile(r"S[1-9][0-9]{0,3}")


def valid_speaker_label(label: object) -> bool:
    """``S1``, ``S2``, ... -- the labels the speaker stage hands out."""
    return isinstance(label, str) and _SPEAKER_LABEL_RE.fullmatch(label) is not None


def _parse_name_speaker(obj: Mapping[str, Any]) -> ClientMessage:
    stream, speaker, name = obj.get("stream"), obj.get("speaker"), obj.get("name")
    if not _valid_stream_id(stream):
        raise ProtocolError("bad_request", f"stream must be a stream id of 1-{MAX_STREAM_ID_CHARS} characters")
    if not valid_speaker_label(speaker):
        raise ProtocolError("bad_request", f"speaker must be a label like 'S1', got {_quote(speaker)}")
    if not isinstance(name, str):
        raise ProtocolError("bad_request", f"name must be a string, got {_quote(name)}")
    name = " ".join(name.split())  # no control characters, newlines or runs of spaces
    if not 0 < len(name) <= MAX_SPEAKER_NAME_CHARS or not _valid_stream_id(name):
        raise ProtocolError("bad_request", f"name must have 1-{MAX_SPEAKER_NAME_CHARS} visible characters")
    return ClientMessage("name_speaker", stream=str(stream), speaker=str(speaker), name=name)


# The ingest websocket's client messages (``/ingest``, see stream/sources/ingest.py).
INGEST_TYPES: Final = ("start", "stop")
MIN_INGEST_RATE_HZ: Final = 8000
MAX_INGEST_RATE_HZ: Final = 192000


@dataclass(frozen=True, slots=True)
class IngestMessage:
    """``{"type": "start", "stream": NAME, "sample_rate_hz": R}`` or ``{"type": "stop"}``."""

    type: str
    stream: str | None = None
    sample_rate_hz: int | None = None


def parse_ingest_message(raw: str | bytes) -> IngestMessage:
    """One text frame of the ingest websocket; :class:`ProtocolError` says what is wrong."""
    if isinstance(raw, bytes):
        raise ProtocolError("bad_request", "send the start message as a text frame before any audio")
    if len(raw) > 4096:
        raise ProtocolError("bad_message", "control messages are at most 4096 characters")
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("bad_message", f"message is not valid JSON: {str(exc)[:120]}") from exc
    if not isinstance(obj, dict) or obj.get("type") not in INGEST_TYPES:
        kind = obj.get("type") if isinstance(obj, dict) else obj
        raise ProtocolError("bad_request", f"unknown message type {_quote(kind)}; expected one of start, stop")
    if obj["type"] == "stop":
        return IngestMessage("stop")
    stream = obj.get("stream")
    if not _valid_stream_id(stream):
        raise ProtocolError("bad_request", f"stream must be a name of 1-{MAX_STREAM_ID_CHARS} characters")
    rate = obj.get("sample_rate_hz")
    if isinstance(rate, float) and rate.is_integer():
        rate = int(rate)
    if not isinstance(rate, int) or isinstance(rate, bool) or not MIN_INGEST_RATE_HZ <= rate <= MAX_INGEST_RATE_HZ:
        raise ProtocolError(
            "bad_request",
            f"sample_rate_hz must be an integer in [{MIN_INGEST_RATE_HZ}, {MAX_INGEST_RATE_HZ}], got {_quote(rate)}",
        )
    return IngestMessage("start", stream=stream, sample_rate_hz=rate)
