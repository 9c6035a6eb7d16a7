"""One readable stdout line per event (``emostream run`` without ``--quiet``)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from stream.protocol import Event
from training.closed_pipe import silence_closed_stdout

__all__ = ["ConsolePrinter", "format_event"]


def _clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts * 1000) % 1000:03d}"


def _span(data: Any) -> str:
    try:
        return f"{float(data['start_s']):7.2f}-{float(data['end_s']):7.2f}s"
    except (KeyError, TypeError, ValueError):
        return ""


def format_event(event: Event) -> str:
    """``HH:MM:SS.mmm stream  type  details`` -- emotion lines lead with label, score and text."""
    d = event.data
    head = f"{_clock(event.ts)} {event.stream:<10.10s}"
    if event.type == "emotion":
        scores = d.get("scores") or {}
        label = str(d.get("label", "?"))
        score = float(scores.get(label, 0.0)) if isinstance(scores, dict) else 0.0
        mods = "+".join(d.get("modalities") or ()) or "-"
        return (
            f"{head} {label.upper():<8} {score:4.2f}  [{_span(d)}] ({mods}, {d.get('latency_ms', 0):.0f} ms)  "
            f"{d.get('text') or '(no text)'}"
        )
    if event.type == "transcript":
        note = f"  (dropped: {d['dropped']})" if d.get("dropped") else ""
        return f"{head} text     [{_span(d)}] {d.get('text') or ''}{note}"
    if event.type == "speech":
        return f"{head} speech   {d.get('state')} {d.get('utterance_id')} at {float(d.get('t_s', 0.0)):.2f}s"
    if event.type == "error":
        return f"{head} ERROR    {d.get('code')}: {d.get('message')}"
    if event.type == "end":
        return f"{head} end      {d.get('reason', '')} after {float(d.get('audio_s', 0.0)):.1f}s of audio"
    if event.type == "stats":
        queues = " ".join(f"{k}={v}" for k, v in (d.get("queues") or {}).items())
        return f"{head} stats    asr rtf {d.get('rtf', {}).get('asr', 0.0):.2f}, queues: {queues}"
    if event.type == "hello":
        return f"{head} hello    streams: {', '.join(s.get('id', '?') for s in d.get('streams', []))}"
    return f"{head} {event.type:<8} {dict(d)}"


class ConsolePrinter:
    """An event sink printing one :func:`format_event` line per event (``verbose=False``: no speech/stats/hello).

    When the reader of stdout goes away (``emostream run | head``) the printer falls silent and calls
    ``on_closed`` once (the service then stops as on Ctrl-C); the other sinks are not affected.
    """

    def __init__(
        self, out: TextIO | None = None, *, verbose: bool = True, on_closed: Callable[[], None] | None = None
    ) -> None:
        self._out = out
        self._verbose = verbose
        self._on_closed = on_closed
        self.closed = False

    def __call__(self, event: Event) -> None:
        if self.closed or (not self._verbose and event.type in ("speech", "stats", "hello")):
            return
        out = self._out if self._out is not None else sys.stdout
        try:
            out.write(format_event(event) + "\n")
            out.flush()
        except BrokenPipeError:
            self.closed = True
            silence_closed_stdout(out)
            if self._on_closed is not None:
                self._on_closed()
