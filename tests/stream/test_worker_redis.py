"""Workers on Redis: jobs through the consumer group, a ``kill -9``-ed worker's job reclaimed and
finished without duplicates, and Redis itself killed and restarted (AOF) under a running job.

The workers are the real ``emostream worker`` processes (sources, VAD, segmenter, pipeline, the Redis
bus) with the two model stages scripted (``tests.reliability.fake_cli``): these tests are about the job
mechanics, not about what Whisper hears.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from stream.config import load_config
from stream.events.redis_bus import Keys, connect
from stream.events.redis_jobs import JobQueue
from tests.helpers import make_dialogue, requires_espeak, write_wav
from tests.redisd import REDIS_SERVER, RedisServer

REPO = Path(__file__).resolve().parents[2]
LINES = [
    "Good morning, everyone.",
    "I cannot believe you did that to me.",
    "Please pass the salt.",
    "We are going home now.",
    "That was the best party ever.",
    "Leave me alone for a while.",
    "Where did you put my keys?",
    "Nobody told me about the meeting.",
    "It is getting dark outside.",
    "Thanks for all your help today.",
]
KEYS = Keys("emostream")

pytestmark = requires_espeak


@pytest.fixture(scope="module")
def dialogue_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_wav(tmp_path_factory.mktemp("media") / "talk.wav", make_dialogue(LINES, gap_s=0.8).audio)


def _config_file(folder: Path) -> Path:
    path = folder / "config.toml"
    path.write_text(
        "[bus]\nclaim_timeout_s = 2.0\n[server]\nstats_interval_s = 1.0\n"
        '[log]\nstdout_events = false\nevent_log_dir = "events"\n'
    )
    return path


def _worker(url: str, folder: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "tests.reliability.fake_cli", "worker", "--config", str(_config_file(folder)),
           "--bus", url, "--jobs", "1", *args]  # fmt: skip
    log = open(folder / f"worker-{time.monotonic_ns()}.log", "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)


def _real_worker(url: str, folder: Path) -> subprocess.Popen[str]:
    """``emostream worker`` as shipped: the default Whisper (the shipped classifier's audio features
    come from its encoder pass) and the shipped classifier."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "stream", "worker", "--config", str(_config_file(folder)), "--bus", url,
           "--checkpoint", str(REPO / "models" / "emostream-default.pt"), "--fast", "--exit-when-idle"]  # fmt: skip
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _submit(url: str, media: Path, name: str, folder: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "stream", "submit", str(media), "--bus", url, "--name", name],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"as stream {name} " in done.stdout
    return name


async def _events(url: str, key: str) -> list[dict[str, Any]]:
    client = connect(url)
    try:
        return [json.loads(f[b"e"]) for _i, f in await client.xrange(key)]
    finally:
        await client.aclose()


async def _wait_for(url: str, stream: str, kind: str, count: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sum(e["type"] == kind for e in await _events(url, KEYS.stream(stream))) >= count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{stream}: fewer than {count} {kind} events after {timeout_s} s")


def _check_once_each(events: list[dict[str, Any]]) -> list[str]:
    """Every utterance has each of its events exactly once; seq strictly increases; one `end`, last."""
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs)), "seq not strictly increasing in the stream"
    keys = Counter((e["type"], e["data"].get("state"), e["data"].get("utterance_id")) for e in events)
    dupes = {k: n for k, n in keys.items() if n > 1}
    assert not dupes, f"published twice: {dupes}"
    assert events[-1]["type"] == "end" and events[-1]["data"]["reason"] == "eof"
    utts = [e["data"]["utterance_id"] for e in events if e["type"] == "emotion"]
    for u in utts:
        for k in (("speech", "start", u), ("speech", "end", u), ("transcript", None, u)):
            assert keys[k] == 1, f"{k} missing"
    return utts


async def test_killed_worker_job_is_reclaimed_and_finished(
    redis_server: RedisServer, dialogue_wav: Path, tmp_path: Path
) -> None:
    url = redis_server.url
    # Reference: the same file run by one worker, uninterrupted, as fast as it goes.
    _submit(url, dialogue_wav, "ref", tmp_path)
    ref = _worker(url, tmp_path, "--fast", "--exit-when-idle")
    assert ref.wait(120) == 0
    reference = _check_once_each(await _events(url, KEYS.stream("ref")))
    ref_spans = {e["data"]["utterance_id"].split("-")[-1]: (e["data"]["start_s"], e["data"]["end_s"])
                 for e in await _events(url, KEYS.stream("ref")) if e["type"] == "emotion"}  # fmt: skip
    assert len(reference) >= 8

    _submit(url, dialogue_wav, "ep", tmp_path)
    first = _worker(url, tmp_path, "--speed", "3")
    try:
        await _wait_for(url, "ep", "emotion", 3)
        first.send_signal(signal.SIGKILL)  # kill -9 mid-job: no hand-back, the job stays pending
        first.wait(10)
        before = await _events(url, KEYS.stream("ep"))
        assert not any(e["type"] == "end" for e in before)
        second = _worker(url, tmp_path, "--speed", "3", "--exit-when-idle")
        assert second.wait(120) == 0
    finally:
        for p in (first,):
            if p.poll() is None:
                p.kill()
    events = await _events(url, KEYS.stream("ep"))
    utts = _check_once_each(events)
    assert [u.split("-")[-1] for u in utts] == [u.split("-")[-1] for u in reference]
    for e in events:
        if e["type"] == "emotion":  # the resumed replay keeps the file's timeline
            start, end = ref_spans[e["data"]["utterance_id"].split("-")[-1]]
            assert abs(e["data"]["start_s"] - start) < 0.1 and abs(e["data"]["end_s"] - end) < 0.1
    assert events[: len(before)] == before  # what the dead worker published stays as it was
    client = connect(url)
    queue = JobQueue(client, load_config(None, **{"bus.url": url}).bus)
    assert await queue.pending() == 0
    assert await client.smembers(KEYS.live) == set()
    await client.aclose()
    names = sorted(n for n in os.listdir(tmp_path) if n.startswith("worker-"))
    logs = "".join((tmp_path / n).read_text() for n in names)
    assert "reclaimed" in logs


async def test_redis_restart_with_aof_keeps_acknowledged_events(dialogue_wav: Path, tmp_path: Path) -> None:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    from websockets.asyncio.client import connect as ws_connect

    from stream.gateway import run_gateway

    server = RedisServer(tmp_path / "redis", aof=True)
    server.start()
    url = server.url
    cfg = load_config(None, **{"bus.url": url, "server.port": 0, "bus.reconnect_max_s": 0.5})
    stop = asyncio.Event()
    ready: list[Any] = []
    gateway = asyncio.create_task(run_gateway(cfg, stop=stop, on_ready=ready.append))
    worker = None
    try:
        while not ready:
            assert not gateway.done(), gateway
            await asyncio.sleep(0.05)
        _submit(url, dialogue_wav, "ep", tmp_path)
        worker = _worker(url, tmp_path, "--speed", "3", "--exit-when-idle")
        received: list[dict[str, Any]] = []
        async with ws_connect(ready[0].ws_url) as ws:
            await ws.recv()  # hello
            await ws.send(json.dumps({"type": "resume", "after_seq": -1}))

            async def read() -> None:
                while True:
                    e = json.loads(await ws.recv())
                    if e["stream"] == "ep":
                        received.append(e)
                        if e["type"] == "end":
                            return

            reader = asyncio.create_task(read())
            while sum(e["type"] == "emotion" for e in received) < 2:
                assert not reader.done()
                await asyncio.sleep(0.05)
            acknowledged = list(received)
            server.kill()  # kill -9 Redis mid-job
            await asyncio.sleep(1.5)
            server.start()  # same port, same folder: the AOF is replayed
            await asyncio.wait_for(reader, 120)
        assert worker.wait(120) == 0
        stored = await _events(url, KEYS.stream("ep"))
        assert stored[: len(acknowledged)] == acknowledged, "an acknowledged event was lost"
        _check_once_each(stored)
        assert received == stored, "the gateway's client missed or repeated events across the restart"
    finally:
        stop.set()
        await asyncio.wait_for(gateway, 30)
        if worker is not None and worker.poll() is None:
            worker.kill()
        server.stop()


@pytest.mark.slow
async def test_real_models_worker_publishes_what_a_gateway_serves(
    redis_server: RedisServer, dialogue_wav: Path, tmp_path: Path
) -> None:
    """The packaged models and the shipped classifier in a real worker; a gateway's client reads it all."""
    from websockets.asyncio.client import connect as ws_connect

    from stream.gateway import run_gateway

    url = redis_server.url
    cfg = load_config(None, **{"bus.url": url, "server.port": 0})
    stop, started = asyncio.Event(), asyncio.Event()
    ready: list[Any] = []

    def on_ready(server: Any) -> None:
        ready.append(server)
        started.set()

    gateway = asyncio.create_task(run_gateway(cfg, stop=stop, on_ready=on_ready))
    try:
        await asyncio.wait_for(started.wait(), 60)
        _submit(url, dialogue_wav, "talk", tmp_path)
        worker = _real_worker(url, tmp_path)
        events: list[dict[str, Any]] = []
        async with ws_connect(ready[0].ws_url) as ws:
            hello = json.loads(await ws.recv())
            await ws.send(json.dumps({"type": "resume", "after_seq": -1}))
            while not any(e["type"] == "end" for e in events):
                e = json.loads(await asyncio.wait_for(ws.recv(), 300))
                if e["stream"] == "talk":
                    events.append(e)
        out, _ = worker.communicate(timeout=120)
        assert worker.returncode == 0, out[-3000:]
        assert hello["data"]["run_id"]
        utts = _check_once_each(events)
        assert len(utts) >= len(LINES) - 2  # VAD may merge or split a line or two
        emotions = [e for e in events if e["type"] == "emotion"]
        assert all(e["data"]["label"] in hello["data"]["labels"] for e in emotions)
        assert sum(bool(e["data"]["text"].strip()) for e in emotions) >= len(emotions) - 2  # Whisper heard them
    finally:
        stop.set()
        await asyncio.wait_for(gateway, 30)
