"""Sources: paced and fast replay (wav, mp4 with video), bad files, the mic buffer, the mic with a
scripted PortAudio and, when PulseAudio is installed, a real virtual microphone."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream.config import AudioConfig
from stream.records import AudioChunk, SourceProblem
from stream.sources import MicBuffer, MicSource, ReplaySource, to_int16
from stream.sources.devices import AudioDevice, DeviceError
from tests.helpers import make_dialogue, make_video_mp4, tone, write_wav


class FakeClock:
    """A virtual clock: ``sleep`` advances it instantly."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


async def collect(it: AsyncIterator[Any], limit: int = 100_000) -> list[Any]:
    out = []
    async for item in it:
        out.append(item)
        if len(out) >= limit:
            break
    return out


async def test_replay_paces_at_real_time_with_exact_contiguous_samples(tmp_path: Path) -> None:
    audio = tone(2.05)
    path = write_wav(tmp_path / "t.wav", audio)
    clock = FakeClock()
    src = ReplaySource("t", path, chunk_ms=100, speed=1.0, clock=clock, sleep=clock.sleep)
    t0 = clock.now
    chunks = await collect(aiter(src))
    assert all(isinstance(c, AudioChunk) for c in chunks)
    assert [c.start_sample for c in chunks] == [i * 1600 for i in range(21)]
    assert sum(c.pcm.size for c in chunks) == audio.size
    assert chunks[-1].pcm.size == 800  # the short last chunk
    assert all(c.pcm.dtype == np.int16 for c in chunks)
    assert np.array_equal(np.concatenate([c.pcm for c in chunks]), to_int16(audio))
    # Chunk n is released when its last sample is due: the whole file takes its own duration.
    assert clock.now - t0 == pytest.approx(2.05, abs=1e-6)
    assert chunks[0].arrival == pytest.approx(t0 + 0.1)
    assert src.stats()["audio_s"] == pytest.approx(2.05)


async def test_replay_speed_and_fast(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "t.wav", tone(3.0))
    clock = FakeClock()
    t0 = clock.now
    await collect(aiter(ReplaySource("t", path, speed=4.0, clock=clock, sleep=clock.sleep)))
    assert clock.now - t0 == pytest.approx(0.75)
    clock2 = FakeClock()
    fast = ReplaySource("t", path, fast=True, clock=clock2, sleep=clock2.sleep)
    assert fast.speed is None
    chunks = await collect(aiter(fast))
    assert clock2.sleeps == [] and sum(c.pcm.size for c in chunks) == 48000


async def test_replay_of_an_mp4_with_a_video_track(tmp_path: Path) -> None:
    talk = make_dialogue(["Hello there."], lead_s=0.3, tail_s=0.3)
    wav = write_wav(tmp_path / "a.wav", talk.audio)
    mp4 = make_video_mp4(tmp_path / "ep.mp4", wav)
    import av

    with av.open(str(mp4)) as container:
        assert container.streams.video and container.streams.audio
    chunks = await collect(aiter(ReplaySource("ep", mp4, fast=True)))
    got = np.concatenate([c.pcm for c in chunks]).astype(np.float32) / 32768
    assert abs(got.size - talk.audio.size) < 0.06 * 16000  # AAC priming/padding only
    assert float(np.sqrt(np.mean(got**2))) == pytest.approx(float(np.sqrt(np.mean(talk.audio**2))), rel=0.2)


async def test_a_stop_while_the_decoder_thread_is_busy_closes_the_file_once_it_is_free(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The cause of a rare exit status 1 on SIGTERM: the stop (a cancellation) landed while a worker thread
    was inside ``next(chunks)``, and closing that generator from the loop raised "generator already
    executing", so the stream ended as failed. The file must instead be closed once the decode returns."""
    decoding, release = threading.Event(), threading.Event()
    closed: list[str] = []

    def slow_chunks(path: object, **kw: object) -> Any:
        try:
            yield np.zeros(1600, np.float32)
            decoding.set()
            release.wait(5)  # a slow decode, as on a loaded machine
            yield np.zeros(1600, np.float32)
        finally:
            closed.append(threading.current_thread().name)

    monkeypatch.setattr("stream.sources.replay.iter_audio_chunks", slow_chunks)
    source = aiter(ReplaySource("t", "x.wav", fast=True))
    first = await anext(source)
    assert isinstance(first, AudioChunk)
    reading = asyncio.ensure_future(anext(source))
    await asyncio.get_running_loop().run_in_executor(None, decoding.wait, 5)
    reading.cancel()  # what Pipeline.stop() does to a source task
    with pytest.raises(asyncio.CancelledError):
        await reading
    assert not closed  # the worker is still decoding: nothing closed it under its feet
    release.set()
    for _ in range(100):
        if closed:
            break
        await asyncio.sleep(0.01)
    assert len(closed) == 1  # closed right after the decode returned, not left to garbage collection


@pytest.mark.parametrize("content", [None, b"", b"this is not audio at all" * 50])
async def test_replay_of_a_bad_file_is_one_fatal_problem_naming_it(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "bad.wav"
    if content is not None:
        path.write_bytes(content)
    items = await collect(aiter(ReplaySource("b", path, fast=True)))
    assert len(items) == 1 and isinstance(items[0], SourceProblem)
    assert items[0].fatal and items[0].code == "source_failed" and "bad.wav" in items[0].message


def test_replay_rejects_a_nonpositive_speed(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="speed"):
        ReplaySource("x", tmp_path / "x.wav", speed=0)


def test_mic_buffer_drops_the_oldest_audio_and_counts_it() -> None:
    woken: list[int] = []
    buf = MicBuffer(1000, lambda: woken.append(1))
    for i in range(5):
        buf.put(np.full(300, i, dtype=np.int16), float(i))
    assert len(woken) == 1  # only the first put found a waiting consumer
    blocks = buf.take()
    assert [start for start, _, _ in blocks] == [600, 900, 1200]  # the newest 900 samples
    assert buf.dropped_samples == 600
    assert [int(b[0]) for _, b, _ in blocks] == [2, 3, 4]
    assert buf.take() == []  # empty -> the next put notifies again
    buf.put(np.zeros(10, dtype=np.int16), 9.0)
    assert len(woken) == 2
    assert buf.next_sample == 1510


def test_mic_buffer_put_never_blocks_under_a_slow_consumer() -> None:
    buf = MicBuffer(16000, lambda: None)
    t0 = time.perf_counter()
    for _ in range(10_000):
        buf.put(np.zeros(480, dtype=np.int16), 0.0)
    assert time.perf_counter() - t0 < 1.0
    assert buf.depth_samples <= 16000 and buf.dropped_samples == 10_000 * 480 - buf.depth_samples


# A scripted PortAudio -------------------------------------------------------------------------


class FakeInputStream:
    def __init__(self, sd: FakeSoundDevice, **kw: Any) -> None:
        self.sd, self.kw = sd, kw
        self.active = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.sd.fail_opens > 0:
            self.sd.fail_opens -= 1
            raise RuntimeError("Error opening InputStream: Device unavailable [PaErrorCode -9985]")
        self.active = True
        self.sd.opened += 1
        self._thread = threading.Thread(target=self._feed, daemon=True)
        self._thread.start()

    def _feed(self) -> None:
        block = self.kw["blocksize"]
        for i in range(self.sd.blocks_per_open):
            if not self.active:
                return
            if self.sd.signal is not None:
                data = self.sd.signal[i * block : (i + 1) * block].reshape(-1, 1)
            else:
                data = np.full((block, 1), i % 100, dtype=np.int16)
            self.kw["callback"](data, block, None, None)
            time.sleep(0.001)
        if self.sd.die_after_blocks:
            self.active = False
            self.kw["finished_callback"]()

    def abort(self) -> None:
        self.active = False

    def close(self) -> None:
        self.active = False
        self.sd.closed += 1


class FakeSoundDevice:
    def __init__(
        self,
        *,
        blocks_per_open: int = 20,
        die_after_blocks: bool = True,
        fail_opens: int = 0,
        only_rate: int | None = None,
        signal: np.ndarray | None = None,
    ) -> None:
        self.blocks_per_open = blocks_per_open
        self.die_after_blocks = die_after_blocks
        self.fail_opens = fail_opens
        self.only_rate = only_rate
        self.signal = signal
        self.opened = self.closed = 0
        self.rates: list[int] = []

    def InputStream(self, **kw: Any) -> FakeInputStream:  # noqa: N802 - mirrors sounddevice
        self.rates.append(kw["samplerate"])
        if self.only_rate is not None and kw["samplerate"] != self.only_rate:
            raise RuntimeError("Error opening InputStream: Invalid sample rate [PaErrorCode -9997]")
        return FakeInputStream(self, **kw)


def _device(spec: str) -> AudioDevice:
    return AudioDevice(7, "Fake Mic", "ALSA", 1, 16000.0, True)


async def test_mic_delivers_blocks_and_reconnects_with_backoff_after_the_device_dies() -> None:
    cfg = AudioConfig(mic_block_ms=30, mic_retry_initial_s=0.5, mic_retry_max_s=1.5)
    sd = FakeSoundDevice(blocks_per_open=10, die_after_blocks=True)
    # A virtual clock: the first connection opens at sample 0 on the timeline however busy the machine is,
    # and each backoff moves the clock on by its delay.
    clock = FakeClock()
    mic = MicSource("mic", "", config=cfg, sounddevice=sd, find_device=_device, clock=clock, sleep=clock.sleep)
    items = await collect(aiter(mic), limit=10 + 1 + 10 + 1 + 10 + 1)
    chunks = [i for i in items if isinstance(i, AudioChunk)]
    problems = [i for i in items if isinstance(i, SourceProblem)]
    assert len(chunks) == 30 and all(c.pcm.size == 480 for c in chunks)
    assert [p.code for p in problems] == ["device_lost"] * 3
    assert all("retrying" in p.message and "Fake Mic" in p.message for p in problems)
    assert not any(p.fatal for p in problems)
    # Within one connection the samples are contiguous; each reconnect starts later on the timeline.
    first = chunks[:10]
    assert [c.start_sample for c in first] == [i * 480 for i in range(10)]
    assert chunks[10].start_sample >= first[-1].end_sample
    assert clock.sleeps[:2] == [0.5, 0.5]  # audio flowed in between, so the backoff was reset
    assert sd.opened == 3 and sd.closed >= 2
    assert mic.stats()["reconnects"] >= 2


async def test_mic_open_failures_back_off_exponentially_up_to_the_cap() -> None:
    cfg = AudioConfig(mic_retry_initial_s=0.5, mic_retry_max_s=3.0)
    sd = FakeSoundDevice(fail_opens=5, blocks_per_open=3, die_after_blocks=False)
    sleeps: list[float] = []

    async def sleep(s: float) -> None:
        sleeps.append(s)
        await asyncio.sleep(0)

    mic = MicSource("mic", "", config=cfg, sounddevice=sd, find_device=_device, sleep=sleep)
    items = await collect(aiter(mic), limit=5 + 3)
    problems = [i for i in items if isinstance(i, SourceProblem)]
    assert [p.code for p in problems] == ["source_failed"] * 5  # never opened: not "lost"
    assert "Device unavailable" in problems[0].message
    assert sleeps == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert sum(isinstance(i, AudioChunk) for i in items) == 3


async def test_mic_reports_a_missing_device_and_keeps_retrying() -> None:
    calls = 0

    def missing(spec: str) -> AudioDevice:
        nonlocal calls
        calls += 1
        raise DeviceError("no input device named like 'usb'; `emostream devices` lists them")

    async def sleep(s: float) -> None:
        await asyncio.sleep(0)

    mic = MicSource("mic", "usb", config=AudioConfig(), sounddevice=FakeSoundDevice(), find_device=missing, sleep=sleep)
    items = await collect(aiter(mic), limit=3)
    assert all(isinstance(i, SourceProblem) and "emostream devices" in i.message for i in items)
    assert calls == 3


async def test_a_device_without_16_khz_records_natively_and_is_resampled() -> None:
    rate = 48000
    t = np.arange(rate * 2) / rate
    sine = (0.5 * 32767 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    sd = FakeSoundDevice(only_rate=rate, blocks_per_open=60, die_after_blocks=False, signal=sine)

    def device48k(spec: str) -> AudioDevice:
        return AudioDevice(3, "USB Mic", "ALSA", 1, 48000.0, False)

    mic = MicSource("mic", "3", config=AudioConfig(mic_block_ms=30), sounddevice=sd, find_device=device48k)
    items = await collect(aiter(mic), limit=60)
    assert sd.rates == [16000, 48000]
    chunks = [i for i in items if isinstance(i, AudioChunk)]
    assert len(chunks) == 60
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert b.start_sample == a.end_sample  # continuous on the 16 kHz timeline
    pcm = np.concatenate([c.pcm for c in chunks]).astype(np.float32)
    assert abs(pcm.size - 60 * 480) < 64  # 1.8 s at 16 kHz (the filter holds back a few samples)
    spectrum = np.abs(np.fft.rfft(pcm[1000:17000]))
    assert abs(np.argmax(spectrum) * 16000 / 16000 - 440) <= 2  # the tone's pitch is unchanged
    assert mic.stats()["device_rate_hz"] == 48000


async def test_a_missing_portaudio_library_ends_the_mic_stream_with_the_install_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stream.sources import mic

    def no_portaudio() -> Any:
        raise DeviceError("PortAudio is not available (libportaudio.so). Install it with `sudo apt-get install ...`")

    monkeypatch.setattr(mic, "load_sounddevice", no_portaudio)
    items = await collect(aiter(MicSource("mic", "", config=AudioConfig(), find_device=_device)))
    assert len(items) == 1 and items[0].fatal and "apt-get install" in items[0].message


async def test_mic_stall_without_audio_counts_as_a_lost_device() -> None:
    sd = FakeSoundDevice(blocks_per_open=2, die_after_blocks=False)  # goes silent but stays "active"

    async def sleep(s: float) -> None:
        await asyncio.sleep(0)

    mic = MicSource("mic", "", config=AudioConfig(), sounddevice=sd, find_device=_device, sleep=sleep, stall_s=0.2)
    mic.FIRST_AUDIO_S = 0.2
    items = await collect(aiter(mic), limit=3)
    assert isinstance(items[2], SourceProblem) and "no audio for 0.2 s" in items[2].message


# A real PulseAudio virtual microphone ---------------------------------------------------------


@pytest.fixture
def pulse_virtual_mic(tmp_path: Path) -> Any:
    """A private PulseAudio daemon with a null sink whose monitor is the default source.

    `make test` installs pulseaudio, pulseaudio-utils and libasound2-plugins (scripts/setup-system.sh);
    the test skips only where they could not be installed.
    """
    for tool in ("pulseaudio", "pactl", "paplay"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install pulseaudio pulseaudio-utils libasound2-plugins)")
    runtime = tmp_path / "pulse-runtime"
    runtime.mkdir()
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime), PULSE_RUNTIME_PATH=str(runtime / "pulse"), HOME=str(tmp_path))
    start = subprocess.run(
        [
            "pulseaudio",
            "-D",
            "--exit-idle-time=-1",
            "-n",
            "--disallow-exit",
            "--log-target=stderr",
            "--load=module-null-sink sink_name=virt",
            "--load=module-native-protocol-unix",
            "--load=module-always-sink",
        ],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    # Installed but unable to start is a failure, not a skip: `make test` installs it so that this runs.
    assert start.returncode == 0, f"pulseaudio could not start: {start.stderr.strip()[-1500:]}"
    try:
        subprocess.run(["pactl", "set-default-source", "virt.monitor"], env=env, check=True, timeout=10)
        yield env
    finally:
        subprocess.run(["pulseaudio", "--kill"], check=False, env=env, capture_output=True, timeout=30)


def test_real_microphone_hears_paplay_through_pulseaudio(pulse_virtual_mic: dict[str, str], tmp_path: Path) -> None:
    env = pulse_virtual_mic
    script = tmp_path / "listen.py"
    clip = write_wav(tmp_path / "beep.wav", tone(1.5, 440.0, 0.5))
    # PortAudio reads PULSE_* from the environment at import time: run the source in a child process.
    script.write_text(
        "import asyncio, sys, numpy as np\n"
        "from stream.config import AudioConfig\n"
        "from stream.sources import MicSource\nfrom stream.records import AudioChunk\n"
        "async def main():\n"
        "    mic = MicSource('mic', 'pulse', config=AudioConfig())\n"
        "    peak, n = 0.0, 0\n"
        "    async for item in mic:\n"
        "        if isinstance(item, AudioChunk):\n"
        "            if n == 0: print('READY', flush=True)\n"
        "            n += item.pcm.size\n"
        "            peak = max(peak, float(np.abs(item.pcm).max()) / 32768)\n"
        "            if n >= 16000 * 4: break\n"
        "        else: print('PROBLEM', item.message, flush=True)\n"
        "    print('PEAK', peak, n, flush=True)\n"
        "asyncio.run(main())\n"
    )
    child_env = dict(env, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen(
        [os.sys.executable, str(script)], env=child_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY"
        subprocess.run(["paplay", "--device=virt", str(clip)], env=env, check=True, timeout=30)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    peaks = [line for line in out.splitlines() if line.startswith("PEAK")]
    assert peaks, f"no result from the mic process: {out} {err[-500:]}"
    peak = float(peaks[0].split()[1])
    assert peak > 0.2, f"the virtual microphone heard nothing loud (peak {peak}): {out}"
