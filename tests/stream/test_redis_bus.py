"""The Redis Streams bus against a real redis-server: seqs, de-duplication, fencing, retries, replay."""

from __future__ import annotations

import json

import pytest

from stream.config import BusConfig
from stream.events.redis_bus import Fenced, Keys, RedisEventBus, RedisHistory, connect, ensure_run_id
from stream.events.redis_jobs import JobQueue
from stream.protocol import PROTOCOL_VERSION
from tests.redisd import RedisServer


def cfg(**kw: object) -> BusConfig:
    return BusConfig(url="redis://x", **kw)  # type: ignore[arg-type]


async def entries(client, key: str) -> list[dict]:
    return [json.loads(f[b"e"]) for _id, f in await client.xrange(key)]


async def test_seq_is_global_and_entry_ids_are_seqs(redis_server: RedisServer) -> None:
    client = connect(redis_server.url)
    keys = Keys("emostream")
    a = RedisEventBus(client, cfg(), producer_id="a")
    b = RedisEventBus(client, cfg(), producer_id="b")
    seqs = []
    for i in range(5):
        seqs.append((await a.emit("speech", "s1", {"state": "start", "utterance_id": f"s1-{i + 1}", "t_s": i})).seq)
        seqs.append((await b.emit("speech", "s2", {"state": "start", "utterance_id": f"s2-{i + 1}", "t_s": i})).seq)
    assert seqs == list(range(1, 11))
    firehose = await client.xrange(keys.events)
    assert [i.decode() for i, _ in firehose] == [f"{n}-0" for n in range(1, 11)]
    assert [e["seq"] for e in await entries(client, keys.stream("s1"))] == [1, 3, 5, 7, 9]
    # The stored JSON is exactly the envelope, seq included.
    first = json.loads(firehose[0][1][b"e"])
    assert first == {"v": PROTOCOL_VERSION, "type": "speech", "seq": 1, "stream": "s1", "ts": first["ts"],
                     "data": {"state": "start", "utterance_id": "s1-1", "t_s": 0}}  # fmt: skip
    await client.aclose()


async def test_unfinished_utterance_events_are_not_published_twice(redis_server: RedisServer) -> None:
    client = connect(redis_server.url)
    keys = Keys("emostream")
    queue = JobQueue(client, cfg(), consumer="w1")
    await queue.ensure_group()
    await client.hset(keys.state("ep"), "owner", "w1")
    bus = RedisEventBus(client, cfg(), owner="w1")
    await bus.emit("speech", "ep", {"state": "start", "utterance_id": "ep-1", "t_s": 0.5})
    await bus.emit("speech", "ep", {"state": "end", "utterance_id": "ep-1", "start_s": 0.2, "end_s": 2.04})
    await bus.emit("speech", "ep", {"state": "start", "utterance_id": "ep-2", "t_s": 3.0})
    await bus.emit("transcript", "ep", {"utterance_id": "ep-1", "start_s": 0.2, "end_s": 2.04, "text": "hi"})
    await bus.emit("emotion", "ep", {"utterance_id": "ep-1", "start_s": 0.2, "end_s": 2.04, "label": "joy"})
    state = await client.hgetall(keys.state("ep"))
    assert state[b"done_utts"] == b"1" and state[b"resume_sample"] == str(round(2.04 * 16000)).encode()
    assert await client.smembers(keys.open("ep")) == {b"speech:start:ep-2"}

    # Another worker takes over and re-runs from the end of ep-1: ep-2's start is already out.
    await client.hset(keys.state("ep"), "owner", "w2")
    bus2 = RedisEventBus(client, cfg(), owner="w2")
    again = await bus2.emit("speech", "ep", {"state": "start", "utterance_id": "ep-2", "t_s": 3.01})
    assert again.seq == -1 and bus2.skipped_duplicates == 1
    await bus2.emit("speech", "ep", {"state": "end", "utterance_id": "ep-2", "start_s": 2.9, "end_s": 4.0})
    await bus2.emit("end", "ep", {"reason": "eof", "audio_s": 4.0})
    got = await entries(client, keys.stream("ep"))
    assert [(e["type"], e["data"].get("state"), e["data"].get("utterance_id")) for e in got] == [
        ("speech", "start", "ep-1"),
        ("speech", "end", "ep-1"),
        ("speech", "start", "ep-2"),
        ("transcript", None, "ep-1"),
        ("emotion", None, "ep-1"),
        ("speech", "end", "ep-2"),
        ("end", None, None),
    ]
    seqs = [e["seq"] for e in got]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert (await client.hget(keys.state("ep"), "ended")) == b"1"

    # The first worker is fenced off: it can publish nothing more on that stream.
    with pytest.raises(Fenced):
        await bus.emit("transcript", "ep", {"utterance_id": "ep-2", "text": "late"})
    await client.aclose()


async def test_a_retried_publish_is_appended_once(redis_server: RedisServer) -> None:
    client = connect(redis_server.url)
    bus = RedisEventBus(client, cfg(), producer_id="p")
    from stream.protocol import Event

    event = Event("stats", 0, "_service", 1.0, {"x": 1})
    first = await bus._publish(event, "p:1")
    again = await bus._publish(event, "p:1")  # the reply was lost: the same token comes back
    assert first == again == 1
    assert await client.xlen(Keys("emostream").events) == 1
    await client.aclose()


async def test_history_replays_pages_and_reports_trimmed_events(redis_server: RedisServer) -> None:
    client = connect(redis_server.url)
    config = cfg(firehose_maxlen_events=1000)
    bus = RedisEventBus(client, config, producer_id="p")
    for i in range(1200):
        await bus.emit("stats", "_service", {"i": i})
    run = await ensure_run_id(client, Keys("emostream"))
    assert run == await ensure_run_id(client, Keys("emostream"))  # created once
    history = RedisHistory(client, config, run, page=100)
    assert await history.head_seq() == 1200
    got = [p.event.seq async for p in history.replay(1100, 1150)]
    assert got == list(range(1101, 1151))
    problem = await history.problem(0)
    assert problem is not None and "retention" in problem  # MAXLEN ~ trimmed the oldest
    assert await history.problem(1100) is None
    await client.aclose()
