"""The microphone failing mid-run, with a scripted PortAudio that fails the way the real one does.

sounddevice reports PortAudio failures (device unplugged, busy, unavailable) as
``sounddevice.PortAudioError``, which derives from ``Exception`` only -- not from ``OSError`` or
``RuntimeError``. The scripted device here raises that very type, so the source's error handling is
tested against what a user's machine will actually throw. Through the real pipeline: an ``error``
event per failure, retries with exponential backoff (reset once audio flows), and audio resumes.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from stream.config import AudioConfig, Config, ServerConfig
from stream.events.bus import EventBus
from stream.pipeline import Pipeline
from stream.protocol import Event
from stream.records import AudioChunk, SourceProblem
from stream.sources import MicSource
from stream.sources.devices import AudioDevice
from tests.helpers.fakes import FakePredictor, FakeTranscriber

try:  # the real exception type; the module needs libportaudio only to open streams
    from sounddevice import PortAudioError
except OSError:  # pragma: no cover - no libportaudio at all

    class PortAudioError(Exception):  # type: ignore[no-redef]
        """Stands in with the same base class as sounddevice's."""


class ScriptedStream:
    def __init__(self, pa: ScriptedPortAudio, session: str, **kw: Any) -> None:
        self.pa, self.session, self.kw = pa, session, kw
        self.active = False

    def start(self) -> None:
        if self.session == "start-fails":
            raise PortAudioError("Error starting stream: Unanticipated host error [PaErrorCode -9999]")
        self.active = True
        threading.Thread(target=self._feed, daemon=True).start()

    def _feed(self) -> None:
        block = self.kw["blocksize"]
        for _ in range(self.pa.blocks_per_session):
            if not self.active:
                return
            with self.pa.lock:
                value = self.pa.delivered % 1000
                self.pa.delivered += 1
            self.kw["callback"](np.full((block, 1), value, dtype=np.int16), block, None, None)
            time.sleep(0.002)
        if self.session == "unplugged":
            self.active = False
            self.kw["finished_callback"]()
        # "stalls": the device just stops calling back (e.g. a USB hub resetting)

    def abort(self) -> None:
        self.active = False

    def close(self) -> None:
        self.active = False


class ScriptedPortAudio:
    """``InputStream`` follows ``sessions``: "unplugged" | "stalls" | "open-fails" | "start-fails" | "ok"."""

    def __init__(self, sessions: list[str], *, blocks_per_session: int = 8) -> None:
        self.sessions = list(sessions)
        self.blocks_per_session = blocks_per_session
        self.opens = 0
        self.delivered = 0
        self.lock = threading.Lock()

    def InputStream(self, **kw: Any) -> ScriptedStream:  # noqa: N802 - mirrors sounddevice
        session = self.sessions[min(self.opens, len(self.sessions) - 1)]
        self.opens += 1
        if session == "open-fails":
            raise PortAudioError("Error opening InputStream: Device unavailable [PaErrorCode -9985]")
        return ScriptedStream(self, session, **kw)


def device(spec: str) -> AudioDevice:
    return AudioDevice(3, "USB Headset", "ALSA", 1, 16000.0, True)


def recording_sleep() -> tuple[list[float], Callable[[float], Any]]:
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)
        await asyncio.sleep(0)

    return delays, sleep


CFG = AudioConfig(mic_block_ms=30, mic_retry_initial_s=0.25, mic_retry_max_s=1.0)


async def collect_until(mic: MicSource, done: Callable[[list[Any]], bool], limit_s: float = 10.0) -> list[Any]:
    items: list[Any] = []
    gen = aiter(mic)

    async def pull() -> None:
        async for item in gen:
            items.append(item)
            if done(items):
                return

    try:
        await asyncio.wait_for(pull(), limit_s)
    finally:
        await gen.aclose()  # type: ignore[attr-defined]
    return items


def problems(items: list[Any]) -> list[SourceProblem]:
    return [i for i in items if isinstance(i, SourceProblem)]


def chunks(items: list[Any]) -> list[AudioChunk]:
    return [i for i in items if isinstance(i, AudioChunk)]


@pytest.mark.parametrize("failure", ["open-fails", "start-fails"])
async def test_portaudio_errors_are_retried_with_backoff(failure: str) -> None:
    pa = ScriptedPortAudio(["ok", failure, failure, failure, "ok"], blocks_per_session=6)
    pa.sessions[0] = "unplugged"
    delays, sleep = recording_sleep()
    mic = MicSource("mic", "", config=CFG, sounddevice=pa, find_device=device, sleep=sleep, stall_s=0.3)
    items = await collect_until(mic, lambda it: len(chunks(it)) >= 12)
    found = problems(items)
    # One problem for the unplug, one per failed reopen; none fatal; the device is named.
    assert len(found) == 4, [p.message for p in found]
    assert not any(p.fatal for p in found)
    assert all("USB Headset" in p.message or "PaErrorCode" in p.message for p in found)
    assert delays[:4] == [0.25, 0.5, 1.0, 1.0], "exponential backoff, capped at mic_retry_max_s"
    # Audio resumed after the failures, later on the timeline (the outage is a gap, never overlap).
    got = chunks(items)
    assert len(got) >= 12
    assert all(b.start_sample >= a.end_sample for a, b in zip(got, got[1:], strict=False))


async def test_stalled_device_is_reported_and_reopened() -> None:
    pa = ScriptedPortAudio(["stalls", "ok"], blocks_per_session=5)
    delays, sleep = recording_sleep()
    mic = MicSource("mic", "", config=CFG, sounddevice=pa, find_device=device, sleep=sleep, stall_s=0.2)
    items = await collect_until(mic, lambda it: len(chunks(it)) >= 8)
    assert [p.code for p in problems(items)] == ["device_lost"]
    assert "no audio" in problems(items)[0].message
    assert pa.opens == 2


async def test_mic_failure_mid_run_through_the_pipeline() -> None:
    """error events reach subscribers, the pipeline keeps running, and audio flows again."""
    pa = ScriptedPortAudio(["unplugged", "open-fails", "ok"], blocks_per_session=10)
    delays, sleep = recording_sleep()
    mic = MicSource("mic", "", config=CFG, sounddevice=pa, find_device=device, sleep=sleep, stall_s=0.3)
    events: list[Event] = []
    bus = EventBus([events.append])
    pipeline = Pipeline(
        [mic],
        bus,
        transcriber=FakeTranscriber(),
        predictor=FakePredictor(),
        config=Config(server=ServerConfig(stats_interval_s=0.05)),
    )
    task = asyncio.create_task(pipeline.run())
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            errors = [e for e in events if e.type == "error"]
            if len(errors) >= 2 and pa.delivered >= 25:
                break
        assert not task.done(), f"the pipeline stopped: {task.exception() if task.done() else ''}"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    errors = [e for e in events if e.type == "error"]
    assert [e.data["code"] for e in errors][:2] == ["device_lost", "device_lost"], [e.data for e in errors]
    assert all(e.stream == "mic" for e in errors)
    assert not any(e.type == "end" for e in events), "a failing microphone must not end its stream"
    assert pa.delivered >= 25, "audio did not resume after the failures"
    stats = [e for e in events if e.type == "stats"]
    assert stats and stats[-1].data["streams"]["mic"]["reconnects"] >= 2
