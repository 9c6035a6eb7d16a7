"""The append-only event log: one new file per run, flushed per event, torn-line tolerant."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from stream.events.eventlog import EventLog, EventLogError, read_events
from stream.protocol import Event


def ev(seq: int, stream: str = "mic", **data: object) -> Event:
    return Event("transcript", seq=seq, stream=stream, ts=1_700_000_000.0 + seq, data={"text": f"line {seq}", **data})


def test_append_then_read_after(tmp_path: Path) -> None:
    with EventLog(tmp_path) as log:
        for i in range(10):
            log.append(ev(i))
        assert [e.seq for e in log.read_after(-1)] == list(range(10))
        assert [e.seq for e in log.read_after(6)] == [7, 8, 9]
        assert list(log.read_after(9)) == []
        assert log.last_seq == 9
    lines = log.path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 10
    assert json.loads(lines[3]) == ev(3).to_dict()
    # A closed log can still be read (a late resume), but not written.
    assert [e.seq for e in log.read_after(8)] == [9]
    with pytest.raises(EventLogError, match="closed"):
        log.append(ev(10))


def test_read_after_uses_the_sparse_index_across_many_events(tmp_path: Path) -> None:
    with EventLog(tmp_path) as log:
        seqs = list(range(0, 3000, 3))  # gaps in seq are allowed: the log orders by seq, it does not count
        for s in seqs:
            log.append(ev(s))
        for after in (-1, 0, 1, 767, 768, 769, 2000, 2997, 5000):
            assert [e.seq for e in log.read_after(after)] == [s for s in seqs if s > after]


def test_seq_must_increase(tmp_path: Path) -> None:
    with EventLog(tmp_path) as log:
        log.append(ev(5))
        with pytest.raises(ValueError, match="not after the last logged seq 5"):
            log.append(ev(5))


def test_each_run_gets_a_new_file_and_never_overwrites(tmp_path: Path) -> None:
    first = EventLog(tmp_path)
    first.append(ev(1))
    first.close()
    second = EventLog(tmp_path)  # a restarted service
    assert second.path != first.path
    assert second.run_id != first.run_id
    second.close()
    assert [e.seq for e in read_events(first.path)] == [1]

    named = EventLog(tmp_path, run_id="demo-1")
    assert named.path.name == "events-demo-1.jsonl"
    named.append(ev(1))
    named.close()
    with pytest.raises(EventLogError, match="already exists"):
        EventLog(tmp_path, run_id="demo-1")
    assert named.path.read_text(encoding="utf-8").count("\n") == 1  # untouched


@pytest.mark.parametrize("bad", ["", "../x", "a/b", ".hidden", "sp ace"])
def test_run_id_is_a_plain_name(tmp_path: Path, bad: str) -> None:
    with pytest.raises(EventLogError, match="run_id"):
        EventLog(tmp_path, run_id=bad)


def test_torn_last_line_and_bad_lines_are_tolerated(tmp_path: Path) -> None:
    log = EventLog(tmp_path, run_id="torn")
    for i in range(3):
        log.append(ev(i))
    log.close()
    with open(log.path, "ab") as fh:
        fh.write(b"this is not json\n")  # a corrupt complete line: skipped with a warning
        fh.write(ev(3).to_json().encode() + b"\n")
        fh.write(ev(4).to_json().encode()[:25])  # cut short by a kill: not an event yet
    assert [e.seq for e in log.read_after(-1)] == [0, 1, 2, 3]


def test_reading_while_appending(tmp_path: Path) -> None:
    with EventLog(tmp_path) as log:
        log.append(ev(0))
        it = log.read_after(-1)
        assert next(it).seq == 0
        log.append(ev(1))  # written after the reader opened the file: still seen
        assert next(it).seq == 1


def test_every_complete_line_survives_kill_9(tmp_path: Path) -> None:
    """A writer killed with SIGKILL mid-run leaves every event it appended readable."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from stream.events.eventlog import EventLog
        from stream.protocol import Event
        log = EventLog(Path({str(tmp_path)!r}), run_id="killed")
        for i in range(200):
            log.append(Event("transcript", seq=i, stream="mic", ts=0.0, data={{"text": "x" * 50}}))
        print("appended", flush=True)
        time.sleep(60)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "appended"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    path = tmp_path / "events-killed.jsonl"
    assert [e.seq for e in read_events(path)] == list(range(200))
