"""The hub: bounded per-subscriber queues, drop-oldest with a counted `lagged` notice, filters."""

from __future__ import annotations

import asyncio
import json

import pytest

from stream.events.hub import Hub
from stream.protocol import CONNECTION_STREAM, SERVICE_STREAM, Event


def ev(seq: int, stream: str = "mic") -> Event:
    return Event("emotion", seq=seq, stream=stream, ts=float(seq), data={"label": "joy"})


def test_publish_fans_out_to_every_subscriber_serialised_once() -> None:
    hub = Hub(queue_events=10)
    a, b = hub.subscribe(), hub.subscribe()
    hub.publish(ev(1))
    (ia,), (ib,) = a.take(10), b.take(10)
    assert ia is ib  # one JSON text shared by all subscribers
    assert json.loads(ia.payload) == ev(1).to_dict()
    assert hub.last_seq == 1


def test_full_queue_drops_oldest_and_reports_lagged() -> None:
    hub = Hub(queue_events=3, clock=lambda: 42.0)
    slow, fast = hub.subscribe(), hub.subscribe()
    for seq in range(1, 4):
        hub.publish(ev(seq))
    assert [i.event.seq for i in fast.take(100)] == [1, 2, 3]
    fast_seen = []
    for seq in range(4, 9):
        hub.publish(ev(seq))
        fast_seen += [i.event.seq for i in fast.take(100)]  # keeps up
    items = slow.take(100)
    lagged = items[0].event
    assert lagged.type == "lagged" and lagged.stream == CONNECTION_STREAM
    assert dict(lagged.data) == {"dropped": 5, "first_seq": 1, "last_seq": 5}
    assert lagged.seq == 8 and lagged.ts == 42.0  # a watermark, not a new seq
    assert [i.event.seq for i in items[1:]] == [6, 7, 8]  # the newest survive
    # The fast one lost nothing; the counts are exact.
    assert fast_seen == [4, 5, 6, 7, 8]
    stats = hub.stats()
    assert (stats.subscribers, stats.dropped_total, stats.lagged_subscribers) == (2, 5, 1)
    # Nothing more to report until it falls behind again.
    hub.publish(ev(9))
    assert [i.event.type for i in slow.take(100)] == ["emotion"]


def test_stream_filter_passes_service_events() -> None:
    hub = Hub(queue_events=10)
    sub = hub.subscribe(["ep1"])
    hub.publish(ev(1, "mic"))
    hub.publish(ev(2, "ep1"))
    hub.publish(ev(3, SERVICE_STREAM))
    assert [i.event.seq for i in sub.take(10)] == [2, 3]
    hub.publish(ev(4, "mic"))
    sub.set_streams(None)
    hub.publish(ev(5, "mic"))
    assert [i.event.seq for i in sub.take(10)] == [5]
    # Narrowing the filter also applies to what is already queued.
    hub.publish(ev(6, "mic"))
    sub.set_streams(["ep1"])
    assert sub.take(10) == []


def test_detached_subscription_rejoins_only_when_caught_up() -> None:
    hub = Hub(queue_events=10)
    sub = hub.subscribe()
    hub.publish(ev(1))
    sub.detach()
    assert sub.depth == 0
    hub.publish(ev(2))
    assert sub.take(10) == []
    assert not hub.go_live(sub, 1)  # seq 2 was published after the replay's end
    assert hub.go_live(sub, 2)
    hub.publish(ev(3))
    assert [i.event.seq for i in sub.take(10)] == [3]


def test_publish_never_blocks_with_a_stuck_subscriber() -> None:
    hub = Hub(queue_events=100)
    stuck = hub.subscribe()
    for seq in range(100_000):
        hub.publish(ev(seq))
    assert stuck.depth == 100
    assert hub.stats().dropped_total == 99_900


async def test_get_waits_for_publish_and_wake() -> None:
    hub = Hub(queue_events=4)
    sub = hub.subscribe()
    getter = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    assert not getter.done()
    hub.publish(ev(7))
    assert (await asyncio.wait_for(getter, 1)).event.seq == 7
    waiter = asyncio.create_task(sub.wait())
    await asyncio.sleep(0)
    sub.wake()
    await asyncio.wait_for(waiter, 1)
    sub.close()
    assert hub.stats().subscribers == 0
    with pytest.raises(EOFError):
        await sub.get()


def test_queue_bound_is_checked() -> None:
    with pytest.raises(ValueError, match="queue_events"):
        Hub(queue_events=0)


def test_filters_are_indexed_and_follow_subscribe_changes() -> None:
    """An event costs only its matching subscribers; the index follows `subscribe` and `close`."""
    hub = Hub(queue_events=10)
    every, ep1, ep2, none = hub.subscribe(), hub.subscribe(["ep1"]), hub.subscribe(["ep2"]), hub.subscribe([])
    hub.publish(ev(1, "ep1"))
    hub.publish(ev(2, SERVICE_STREAM))
    got = {name: [i.event.seq for i in s.take(10)] for name, s in (("every", every), ("ep1", ep1), ("ep2", ep2),
                                                                     ("none", none))}  # fmt: skip
    assert got == {"every": [1, 2], "ep1": [1, 2], "ep2": [2], "none": [2]}
    ep2.set_streams(["ep1", "ep3"])
    ep1.set_streams(None)
    every.close()
    hub.publish(ev(3, "ep1"))
    hub.publish(ev(4, "ep3"))
    assert [i.event.seq for i in ep2.take(10)] == [3, 4]
    assert [i.event.seq for i in ep1.take(10)] == [3, 4]
    assert every.take(10) == [] and none.take(10) == []
    ep2.close()
    ep1.close()
    none.close()
    assert not hub._by_stream and not hub._every_stream and not hub._subscribers
