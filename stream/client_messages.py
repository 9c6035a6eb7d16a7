"""What clients send: subscriber messages on ``/ws``, the ``POST /api/classify`` body, ingest control frames.

Each parser takes the raw frame or body and returns a typed message, or raises
:class:`stream.protocol.ProtocolError` with a short reason (never echoing a whole payload back). The
names and limits they check are part of the event schema in :mod:`stream.protocol`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from stream.protocol import (
    CLIENT_TYPES,
    MAX_SPEAKER_NAME_CHARS,
    MAX_STREAM_FILTER,
    MAX_STREAM_ID_CHARS,
    ProtocolError,
    valid_speaker_label,
)

__all__ = [
    "MAX_CLASSIFY_TEXT_CHARS",
    "MAX_CLIENT_MESSAGE_BYTES",
    "ClientMessage",
    "IngestMessage",
    "parse_classify_request",
    "parse_client_message",
    "parse_ingest_message",
]


@dataclass(frozen=True, slots=True)
class ClientMessage:
    """A parsed message from a subscriber."""

    type: str
    streams: tuple[str, ...] | None = None  # subscribe: None = all streams
    after_seq: int | None = None  # resume
    stream: str | None = None  # name_speaker
    speaker: str | None = None  # name_speaker: "S1", "S2", ...
    name: str | None = None  # name_speaker: what to call that speaker


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


def _loads(raw: str | bytes, what: str) -> Any:
    """The JSON value of a client's text; ``what`` ("message", "body") names it in the error."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("bad_message", f"{what} is not valid UTF-8") from exc
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("bad_message", f"{what} is not valid JSON: {str(exc)[:120]}") from exc


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
    obj = _loads(raw, "message")
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
    obj = _loads(raw, "body")
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
    obj = _loads(raw, "message")
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
