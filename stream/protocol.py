"""The versioned event protocol: the one place that defines what subscribers receive and may send.

Every event is one JSON object::

    {"v": 1, "type": T, "seq": N, "stream": ID, "ts": unix_seconds, "data": {...}}

``seq`` is strictly increasing per service run (assigned by :class:`stream.events.EventBus`).
``web/protocol.js`` mirrors these names; ``docs/protocol.md`` and ``docs/event.schema.json``
document them, and the tests keep the three in step.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "CLIENT_TYPES",
    "EVENT_TYPES",
    "LABELS",
    "LABEL_COLORS",
    "PROTOCOL_VERSION",
    "SERVICE_STREAM",
    "ClientMessage",
    "Event",
    "ProtocolError",
    "parse_client_message",
]

PROTOCOL_VERSION: Final = 1

# The 7 MELD emotions, in the order the classifier's outputs use.
LABELS: Final = ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise")

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

EVENT_TYPES: Final = (
    "hello",  # on connect: labels, colours, streams, model ids
    "speech",  # state start/end of an utterance
    "transcript",  # Whisper's text for an utterance
    "emotion",  # the classifier's decision for an utterance
    "stats",  # queue depths, drops, real-time factor
    "error",  # code + message; a stream or the service hit a problem
    "end",  # a stream's source finished
    "lagged",  # this subscriber lost `dropped` events because it read too slowly
)

CLIENT_TYPES: Final = ("subscribe", "resume", "ping")

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


@dataclass(frozen=True, slots=True)
class ClientMessage:
    """A parsed message from a subscriber."""

    type: str
    streams: tuple[str, ...] | None = None  # subscribe: None = all streams
    after_seq: int | None = None  # resume


MAX_STREAM_FILTER: Final = 256
MAX_STREAM_ID_CHARS: Final = 128


def parse_client_message(raw: str | bytes) -> ClientMessage:
    """Parse one client frame; anything unexpected raises :class:`ProtocolError` with a reason.

    Accepted::

        {"type": "subscribe", "streams": ["mic", "ep1"]}   # or "streams": null for all
        {"type": "resume", "after_seq": 41}
        {"type": "ping"}
    """
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("bad_message", "message is not valid UTF-8") from exc
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("bad_message", f"message is not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ProtocolError("bad_message", "message must be a JSON object")
    kind = obj.get("type")
    if kind not in CLIENT_TYPES:
        raise ProtocolError("bad_request", f"unknown message type {kind!r}; expected one of {', '.join(CLIENT_TYPES)}")
    if kind == "ping":
        return ClientMessage("ping")
    if kind == "subscribe":
        streams = obj.get("streams")
        if streams is None:
            return ClientMessage("subscribe", streams=None)
        if not isinstance(streams, list) or len(streams) > MAX_STREAM_FILTER:
            raise ProtocolError("bad_request", f"streams must be a list of at most {MAX_STREAM_FILTER} stream ids")
        if not all(isinstance(s, str) and 0 < len(s) <= MAX_STREAM_ID_CHARS for s in streams):
            raise ProtocolError("bad_request", f"each stream id must be a string of 1-{MAX_STREAM_ID_CHARS} characters")
        return ClientMessage("subscribe", streams=tuple(dict.fromkeys(streams)))
    after = obj.get("after_seq")
    if not isinstance(after, int) or isinstance(after, bool) or after < -1 or after > 2**53:
        raise ProtocolError("bad_request", f"after_seq must be an integer >= -1, got {after!r}")
    return ClientMessage("resume", after_seq=after)
