"""Property tests: ``parse_client_message`` takes anything a client can send and never misbehaves.

Whatever arrives (bytes, text, any JSON), the parser returns a well-formed :class:`ClientMessage`
or raises :class:`ProtocolError` with a known code and a short message -- never another exception,
never an unbounded error text echoing the client's payload back.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from stream.client_messages import ClientMessage, parse_client_message
from stream.protocol import (
    CLIENT_TYPES,
    ERROR_CODES,
    MAX_STREAM_FILTER,
    MAX_STREAM_ID_CHARS,
    ProtocolError,
)

# A client error message is shown to the client and logged: it must stay short whatever was sent.
MAX_ERROR_CHARS = 300

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)
near_type = st.sampled_from([*CLIENT_TYPES, "Subscribe", "", "resume ", "hello", None, 1, [], {}])
near_streams = (
    st.none()
    | st.lists(st.text(max_size=MAX_STREAM_ID_CHARS + 2), max_size=6)
    | st.lists(json_values, max_size=4)
    | json_values
)
near_seq = (
    st.integers(min_value=-3, max_value=2**53 + 2)
    | st.integers()
    | st.booleans()
    | st.floats()
    | st.text(max_size=5)
    | st.none()
)
near_messages = st.fixed_dictionaries(
    {"type": near_type},
    optional={"streams": near_streams, "after_seq": near_seq, "extra": json_values},
)


def check_outcome(raw: str | bytes) -> ClientMessage | ProtocolError:
    try:
        msg = parse_client_message(raw)
    except ProtocolError as exc:
        assert exc.code in ERROR_CODES, exc.code
        assert isinstance(exc.message, str) and exc.message
        assert len(exc.message) <= MAX_ERROR_CHARS, f"error text of {len(exc.message)} chars"
        # The reason is sent back inside an event: it must be encodable.
        exc.message.encode("utf-8")
        return exc
    assert isinstance(msg, ClientMessage)
    assert msg.type in CLIENT_TYPES
    if msg.type == "subscribe":
        assert msg.after_seq is None
        if msg.streams is not None:
            assert isinstance(msg.streams, tuple)
            assert len(msg.streams) <= MAX_STREAM_FILTER
            assert len(set(msg.streams)) == len(msg.streams)
            for s in msg.streams:
                assert isinstance(s, str) and 0 < len(s) <= MAX_STREAM_ID_CHARS
                s.encode("utf-8")  # no lone surrogates: ids are echoed in events and logs
    elif msg.type == "resume":
        assert msg.streams is None
        assert isinstance(msg.after_seq, int) and not isinstance(msg.after_seq, bool)
        assert -1 <= msg.after_seq <= 2**53
    else:
        assert msg.streams is None and msg.after_seq is None
    return msg


@FUZZ
@given(st.binary(max_size=300))
@example(b"\xff\xfe")
@example(b"")
@example(b"\x00")
@example(b'{"type": "ping"}\x00')
def test_any_bytes(raw: bytes) -> None:
    check_outcome(raw)


@FUZZ
@given(st.text(max_size=300))
@example("\ud800")
@example("NaN")
@example("1" * 5000)
def test_any_text(raw: str) -> None:
    check_outcome(raw)


@FUZZ
@given(json_values)
def test_any_json_value(value: Any) -> None:
    raw = json.dumps(value)
    check_outcome(raw)
    check_outcome(raw.encode("utf-8"))


@FUZZ
@given(near_messages)
@example({"type": "subscribe", "streams": ["\ud800"]})
@example({"type": "subscribe", "streams": ["x" * (MAX_STREAM_ID_CHARS + 1)]})
@example({"type": "subscribe", "streams": [str(i) for i in range(MAX_STREAM_FILTER + 1)]})
@example({"type": "resume", "after_seq": 2**53 + 1})
@example({"type": "resume", "after_seq": True})
@example({"type": "resume", "after_seq": 1.0})
@example({"type": "x" * 100_000})
@example({"type": "resume", "after_seq": "9" * 100_000})
def test_near_valid_messages(obj: dict[str, Any]) -> None:
    out = check_outcome(json.dumps(obj))
    # Whatever the parser accepted must say what the client asked for.
    if isinstance(out, ClientMessage):
        assert out.type == obj["type"]
        if out.type == "resume":
            assert out.after_seq == obj["after_seq"]


@FUZZ
@given(
    st.lists(
        st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=MAX_STREAM_ID_CHARS),
        max_size=MAX_STREAM_FILTER,
    )
)
def test_valid_subscribe_round_trips(streams: list[str]) -> None:
    msg = parse_client_message(json.dumps({"type": "subscribe", "streams": streams}))
    assert msg == ClientMessage("subscribe", streams=tuple(dict.fromkeys(streams)))


@FUZZ
@given(st.integers(min_value=-1, max_value=2**53))
def test_valid_resume_round_trips(seq: int) -> None:
    assert parse_client_message(json.dumps({"type": "resume", "after_seq": seq}).encode()) == ClientMessage(
        "resume", after_seq=seq
    )


@pytest.mark.parametrize(
    "raw",
    [
        "[" * 100_000 + "]" * 100_000,  # deep nesting: RecursionError inside json
        '{"a":' * 50_000 + "1" + "}" * 50_000,
        '{"type": "resume", "after_seq": ' + "9" * 10_000 + "}",  # int() digit limit
        '{"type": "ping", "pad": "' + "x" * (2 << 20) + '"}',  # far beyond any allowed frame size
    ],
    ids=["deep-list", "deep-object", "huge-int", "huge-frame"],
)
def test_pathological_frames(raw: str) -> None:
    out = check_outcome(raw)
    if len(raw) > (1 << 20):
        assert isinstance(out, ProtocolError), "a frame over the 1 MiB protocol limit must be refused"


@pytest.mark.parametrize("raw", [bytearray(b'{"type":"ping"}'), memoryview(b'{"type":"ping"}')])
def test_bytes_like_frames(raw: Any) -> None:
    assert check_outcome(raw) == ClientMessage("ping")


@pytest.mark.parametrize("raw", [None, 42, 1.5, ["ping"], {"type": "ping"}, object()])
def test_non_frame_objects_raise_protocol_error(raw: Any) -> None:
    with pytest.raises(ProtocolError):
        parse_client_message(raw)
