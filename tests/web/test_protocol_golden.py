"""stream/protocol.py and web/protocol.js agree, through one golden JSON file both are checked against.

The Python side always runs; the JavaScript side runs with Node.js when it is installed (the
headless-Chromium test checks the page's copy of protocol.js against the same file too).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from stream import protocol
from stream.client_messages import parse_client_message
from stream.protocol import Event, ProtocolError

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
GOLDEN: dict[str, Any] = json.loads((HERE / "protocol_golden.json").read_text(encoding="utf-8"))
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="Node.js is not installed; the browser test covers protocol.js")


def test_python_constants_match_golden() -> None:
    assert GOLDEN["constants"] == {
        "version": protocol.PROTOCOL_VERSION,
        "event_types": list(protocol.EVENT_TYPES),
        "client_types": list(protocol.CLIENT_TYPES),
        "error_codes": list(protocol.ERROR_CODES),
        "service_stream": protocol.SERVICE_STREAM,
        "connection_stream": protocol.CONNECTION_STREAM,
        "max_stream_filter": protocol.MAX_STREAM_FILTER,
        "max_stream_id_chars": protocol.MAX_STREAM_ID_CHARS,
        "envelope_keys": list(Event("t", 0, "s", 0.0).to_dict()),
    }


def test_python_parser_on_golden_events_and_messages() -> None:
    for obj in GOLDEN["events"]["valid"]:
        assert Event.from_dict(obj).to_dict() == {**obj, "ts": float(obj["ts"])}
    for obj in GOLDEN["events"]["invalid"]:
        with pytest.raises(ProtocolError):
            Event.from_dict(obj)
    for name, message in GOLDEN["client_messages"].items():
        parsed = parse_client_message(json.dumps(message))
        assert parsed.type == message["type"], name


def run_node(script: str, *args: str) -> str:
    assert NODE is not None
    done = subprocess.run([NODE, str(HERE / script), *args], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@needs_node
def test_javascript_matches_golden() -> None:
    module = (ROOT / "web" / "protocol.js").as_uri()
    got = json.loads(run_node("golden_check.mjs", module, str(HERE / "protocol_golden.json")))
    assert got["constants"] == GOLDEN["constants"]
    assert got["valid"] == [True] * len(GOLDEN["events"]["valid"])
    assert got["invalid"] == [False] * len(GOLDEN["events"]["invalid"])
    assert got["bad_json"] == "bad_message"
    first = GOLDEN["events"]["valid"][0]
    assert got["parsed_text"] == {k: first[k] for k in ("type", "seq", "stream", "ts", "data")}
    # What the page sends is exactly what the server parses.
    assert got["client_messages"] == GOLDEN["client_messages"]


@needs_node
def test_dashboard_store_logic() -> None:
    out = run_node("store_test.mjs", (ROOT / "web" / "store.js").as_uri())
    assert "FAIL" not in out and out.count("ok - ") >= 8, out
