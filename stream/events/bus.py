"""The event bus: assigns ``seq`` and ``ts`` and hands each event to every sink.

Sinks are plain callables ``sink(event) -> None`` that must not block for long: the event log's
``append``, the hub's non-blocking ``publish``, a :class:`JsonlWriter` and the console printer.
A sink that raises is logged and counted, and the others still get the event.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from stream.protocol import Event

if TYPE_CHECKING:
    from stream.events.hub import Published

__all__ = ["EventBus", "EventHistory", "JsonlWriter", "Sink"]

logger = logging.getLogger(__name__)

Sink = Callable[[Event], None]


class EventHistory(Protocol):
    """The logged events a websocket server replays for ``resume`` -- the reading half of a bus.

    Two implementations: the in-process event log (:class:`stream.events.eventlog.LogHistory`, one
    ``emostream run``) and Redis Streams (:class:`stream.events.redis_bus.RedisHistory`, shared by
    every gateway). The live half is a :class:`stream.events.hub.Hub` either way: fed by the
    :class:`EventBus` in-process, or by a gateway's reader of Redis.
    """

    run_id: str

    async def head_seq(self) -> int | None:
        """The newest logged seq anywhere (``None`` before the first): may be ahead of the hub."""
        ...

    async def problem(self, after_seq: int) -> str | None:
        """Why a replay after ``after_seq`` may miss events, or ``None``."""
        ...

    def replay(self, after_seq: int, upto_seq: int) -> AsyncIterator[Event | Published]:
        """The logged events with ``after_seq < seq <= upto_seq``, in seq order (with their JSON text
        when the history stores it)."""
        ...


class EventBus:
    """Builds :class:`stream.protocol.Event` records with strictly increasing ``seq`` and fans them out."""

    def __init__(self, sinks: Iterable[Sink] = (), *, clock: Callable[[], float] = time.time) -> None:
        self._sinks = list(sinks)
        self._clock = clock
        self._seq = 0
        self.sink_errors: dict[str, int] = {}
        self.counts: dict[str, int] = {}

    def add_sink(self, sink: Sink) -> None:
        self._sinks.append(sink)

    @property
    def last_seq(self) -> int:
        """The ``seq`` of the latest event (-1 before the first)."""
        return self._seq - 1

    async def emit(self, type: str, stream: str, data: Mapping[str, Any]) -> Event:
        """Emit one event to every sink and return it (see :meth:`emit_nowait`)."""
        return self.emit_nowait(type, stream, data)

    def emit_nowait(self, type: str, stream: str, data: Mapping[str, Any]) -> Event:
        """The synchronous core of :meth:`emit`, for callers outside a coroutine."""
        event = Event(type=type, seq=self._seq, stream=stream, ts=round(self._clock(), 6), data=dict(data))
        self._seq += 1
        self.counts[type] = self.counts.get(type, 0) + 1
        for sink in self._sinks:
            try:
                sink(event)
            except Exception:
                name = _sink_name(sink)
                self.sink_errors[name] = self.sink_errors.get(name, 0) + 1
                # Log the first failure of a sink with its traceback, later ones briefly.
                if self.sink_errors[name] == 1:
                    logger.exception("event sink %s failed on %s #%d", name, type, event.seq)
                else:
                    logger.debug("event sink %s failed again on %s #%d", name, type, event.seq)
        return event


def _sink_name(sink: Sink) -> str:
    owner = getattr(sink, "__self__", None)
    name = getattr(sink, "__qualname__", None) or type(sink).__name__
    return f"{type(owner).__name__}.{sink.__name__}" if owner is not None else str(name)


class JsonlWriter:
    """``--jsonl PATH``: one event per line, flushed after each so a reader can tail it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: TextIO | None = self.path.open("w", encoding="utf-8")

    def __call__(self, event: Event) -> None:
        if self._fh is None:
            raise RuntimeError(f"{self.path} is closed")
        self._fh.write(event.to_json() + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            fh, self._fh = self._fh, None
            try:
                fh.close()
            except OSError as exc:  # e.g. the disk is full: the unwritten tail is lost (already logged)
                logger.error("closing %s failed: %s", self.path, exc)
