"""Live fan-out of events to websocket subscribers, one bounded queue each.

:meth:`Hub.publish` is called synchronously by the event bus for every event and never blocks or
awaits: it appends the event (serialised once, shared by all subscribers) to each matching
subscriber's queue. The overflow policy is written here and counted: a subscriber whose queue is
full loses its **oldest** queued event, and the next thing it reads is a ``lagged`` event saying how
many it lost (and which seqs), so a slow reader never slows the pipeline or any other subscriber.

A subscription may be *detached* while its connection replays the event log for ``resume``; it
rejoins the live flow with :meth:`Hub.go_live`, which only succeeds when nothing newer than the
replay's last seq has been published -- a synchronous check, so no event can fall in between.

Everything here runs on the event loop thread; nothing is thread-safe.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from stream.protocol import CONNECTION_STREAM, SERVICE_STREAM, Event, lagged_data

__all__ = ["Hub", "HubStats", "Published", "Subscription"]

_NONE: frozenset[Subscription] = frozenset()


@dataclass(frozen=True, slots=True)
class Published:
    """An event and its JSON text, serialised once per publish and shared by every subscriber."""

    event: Event
    payload: str

    @classmethod
    def of(cls, event: Event) -> Published:
        return cls(event, event.to_json())


@dataclass(frozen=True, slots=True)
class HubStats:
    """Counters for the ``stats`` event."""

    subscribers: int
    dropped_total: int  # events dropped from slow subscribers' queues since the hub started
    lagged_subscribers: int  # subscribers that have lost at least one event
    max_queue_depth: int  # the fullest subscriber queue right now
    queue_events: int  # the per-subscriber bound

    def to_dict(self) -> dict[str, int]:
        return {
            "subscribers": self.subscribers,
            "dropped_total": self.dropped_total,
            "lagged_subscribers": self.lagged_subscribers,
            "max_queue_depth": self.max_queue_depth,
            "queue_events": self.queue_events,
        }


class Subscription:
    """One subscriber's bounded queue and stream filter. Made by :meth:`Hub.subscribe`."""

    def __init__(self, hub: Hub, streams: Iterable[str] | None, *, live: bool) -> None:
        self._hub = hub
        self._queue: deque[Published] = deque()
        self._wakeup = asyncio.Event()
        self.streams: frozenset[str] | None = None
        self.set_streams(streams)
        self.live = live
        self.closed = False
        # Events lost since this subscriber last read (reported by the next `lagged` event).
        self._dropped = 0
        self._dropped_first_seq = 0
        self._dropped_last_seq = 0
        self.dropped_total = 0

    def set_streams(self, streams: Iterable[str] | None) -> None:
        """Receive only these streams (``None``: all). Service-wide events always pass."""
        new = None if streams is None else frozenset(streams)
        self._hub._reindex(self, self.streams, new)
        self.streams = new

    def accepts(self, stream: str) -> bool:
        return self.streams is None or stream in self.streams or stream in (SERVICE_STREAM, CONNECTION_STREAM)

    @property
    def depth(self) -> int:
        """Events waiting in the queue."""
        return len(self._queue)

    def _push(self, item: Published) -> None:
        if len(self._queue) >= self._hub.queue_events:
            lost = self._queue.popleft()
            if self._dropped == 0:
                self._dropped_first_seq = lost.event.seq
            self._dropped += 1
            self._dropped_last_seq = lost.event.seq
            self.dropped_total += 1
            self._hub._dropped_total += 1
        self._queue.append(item)
        self._wakeup.set()

    def take(self, limit: int) -> list[Published]:
        """Up to ``limit`` waiting items, without waiting; a ``lagged`` notice comes first when due."""
        out: list[Published] = []
        if self._dropped:
            out.append(
                Published.of(
                    self._hub.connection_event(
                        "lagged",
                        lagged_data(self._dropped, first_seq=self._dropped_first_seq, last_seq=self._dropped_last_seq),
                    )
                )
            )
            self._dropped = 0
        while self._queue and len(out) < limit:
            item = self._queue.popleft()
            # The filter is checked again here: a `subscribe` may have narrowed it after queueing.
            if self.accepts(item.event.stream):
                out.append(item)
        return out

    async def wait(self) -> None:
        """Return once something may be waiting (an event, a drop, or :meth:`wake`)."""
        if self._queue or self._dropped or self.closed:
            return
        self._wakeup.clear()
        await self._wakeup.wait()

    def wake(self) -> None:
        """Make a pending :meth:`wait` return (e.g. because the connection has a command to run)."""
        self._wakeup.set()

    async def get(self) -> Published:
        """The next item (waiting for one). Raises :class:`EOFError` once closed and empty."""
        while True:
            items = self.take(1)
            if items:
                return items[0]
            if self.closed:
                raise EOFError("subscription closed")
            await self.wait()

    def detach(self) -> None:
        """Stop receiving live events and forget the queue (a log replay will cover them)."""
        self.live = False
        self._queue.clear()
        self._dropped = 0

    def close(self) -> None:
        """Leave the hub. Idempotent."""
        self.closed = True
        self._hub._reindex(self, self.streams, None, leaving=True)
        self._hub._subscribers.discard(self)
        self._queue.clear()
        self._wakeup.set()


class Hub:
    """Fan-out of published events to subscribers, each with a queue of at most ``queue_events``."""

    def __init__(self, *, queue_events: int, clock: Callable[[], float] = time.time) -> None:
        if queue_events < 1:
            raise ValueError(f"queue_events must be >= 1, got {queue_events}")
        self.queue_events = queue_events
        self._clock = clock
        self._subscribers: set[Subscription] = set()
        # The same subscribers indexed by filter, so an event costs its matching subscribers only:
        # those taking every stream, and those that named its stream.
        self._every_stream: set[Subscription] = set()
        self._by_stream: dict[str, set[Subscription]] = {}
        self._last_seq: int | None = None
        self._dropped_total = 0

    @property
    def last_seq(self) -> int | None:
        """The highest seq published so far (``None`` before the first event): the watermark."""
        return self._last_seq

    def publish(self, event: Event, payload: str | None = None) -> None:
        """Queue ``event`` for every live subscriber whose filter accepts it. Never blocks.

        ``payload`` is the event's JSON when the caller already has it (a gateway reading Redis).
        """
        if self._last_seq is None or event.seq > self._last_seq:
            self._last_seq = event.seq
        if not self._subscribers:
            return
        stream = event.stream
        groups: tuple[AbstractSet[Subscription], ...]
        if stream in (SERVICE_STREAM, CONNECTION_STREAM):
            groups = (self._subscribers,)
        else:
            groups = (self._every_stream, self._by_stream.get(stream, _NONE))
        item: Published | None = None
        for group in groups:
            for sub in group:
                if sub.live:
                    if item is None:
                        item = Published(event, payload) if payload is not None else Published.of(event)
                    sub._push(item)

    def _reindex(
        self, sub: Subscription, old: frozenset[str] | None, new: frozenset[str] | None, *, leaving: bool = False
    ) -> None:
        if sub not in self._subscribers:
            return  # not yet subscribed (the constructor), or already closed
        if old is None:
            self._every_stream.discard(sub)
        else:
            for name in old:
                bucket = self._by_stream.get(name)
                if bucket is not None:
                    bucket.discard(sub)
                    if not bucket:
                        del self._by_stream[name]
        if leaving:
            return
        if new is None:
            self._every_stream.add(sub)
        else:
            for name in new:
                self._by_stream.setdefault(name, set()).add(sub)

    def advance(self, seq: int) -> None:
        """Raise the watermark to ``seq`` without publishing (a gateway starting after events it
        will not fan out live: they are in the bus's history for ``resume``)."""
        if self._last_seq is None or seq > self._last_seq:
            self._last_seq = seq

    def subscribe(self, streams: Iterable[str] | None = None, *, live: bool = True) -> Subscription:
        """A new subscription (all streams by default). Close it with :meth:`Subscription.close`."""
        sub = Subscription(self, streams, live=live)
        self._subscribers.add(sub)
        self._reindex(sub, None, sub.streams)
        return sub

    def go_live(self, sub: Subscription, after_seq: int) -> bool:
        """Rejoin the live flow if nothing after ``after_seq`` has been published; else ``False``.

        Synchronous on purpose: between this check and the next publish nothing else can run, so a
        subscriber that replayed the log up to ``after_seq`` continues with no gap and no duplicate.
        """
        if self._last_seq is not None and self._last_seq > after_seq:
            return False
        sub.live = True
        return True

    def connection_event(self, kind: str, data: dict[str, object]) -> Event:
        """An event for one connection only (``hello``, ``lagged``, ``pong``, error replies).

        Its seq is the watermark (the last published seq, 0 before any), never a new number.
        """
        return Event(kind, seq=max(self._last_seq or 0, 0), stream=CONNECTION_STREAM, ts=self._clock(), data=data)

    def stats(self) -> HubStats:
        subs = list(self._subscribers)
        return HubStats(
            subscribers=len(subs),
            dropped_total=self._dropped_total,
            lagged_subscribers=sum(1 for s in subs if s.dropped_total),
            max_queue_depth=max((s.depth for s in subs), default=0),
            queue_events=self.queue_events,
        )
