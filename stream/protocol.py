"""The versioned event protocol: the one place that defines what subscribers receive and may send.

Every event is one JSON object::

    {"v": 1, "type": T, "seq": N, "stream": ID, "ts": unix_seconds, "data": {...}}

``seq`` is strictly increasing per service run (assigned by :class:`stream.events.bus.EventBus`).
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
    "CONNECTION_STREAM",
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
    after = obj.get("after_seq")
    if not isinstance(after, int) or isinstance(after, bool) or after < -1 or after > 2**53:
        raise ProtocolError("bad_request", f"after_seq must be an integer in [-1, 2**53], got {_quote(after)}")
    return ClientMessage("resume", after_seq=after)
