"""The microphone (sounddevice / PortAudio), with device loss, reconnects and resampling.

The microphone cannot wait, so its PortAudio callback only copies the block into :class:`MicBuffer`,
which keeps at most ``audio.mic_buffer_s`` seconds and drops the *oldest* audio beyond that, counting
the dropped samples for ``stats``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np

from stream.config import AudioConfig
from stream.records import AudioChunk, SourceItem, SourceProblem
from stream.sources.base import Clock, Sleep
from stream.sources.devices import AudioDevice, DeviceError, find_input_device, load_sounddevice
from stream.sources.resample import Resampler

__all__ = ["MicBuffer", "MicSource"]

logger = logging.getLogger(__name__)


class MicBuffer:
    """The bounded hand-off from PortAudio's thread to the event loop.

    :meth:`put` runs in the audio callback: it holds a lock for a few list operations only, never
    waits, and drops the oldest blocks beyond ``capacity_samples`` (counted in ``dropped_samples``).
    ``notify`` is called (from that thread) when a consumer is waiting; it must be thread-safe,
    e.g. ``lambda: loop.call_soon_threadsafe(event.set)``.
    """

    def __init__(self, capacity_samples: int, notify: Callable[[], None]) -> None:
        if capacity_samples <= 0:
            raise ValueError("capacity_samples must be positive")
        self.capacity_samples = capacity_samples
        self._notify = notify
        self._lock = threading.Lock()
        self._blocks: deque[tuple[int, np.ndarray, float]] = deque()
        self._size = 0
        self._waiting = True
        self.dropped_samples = 0
        self.next_sample = 0  # timeline position of the next captured sample

    def put(self, pcm: np.ndarray, captured_at: float) -> None:
        with self._lock:
            self._blocks.append((self.next_sample, pcm, captured_at))
            self.next_sample += pcm.size
            self._size += pcm.size
            while self._size > self.capacity_samples and len(self._blocks) > 1:
                _, old, _ = self._blocks.popleft()
                self._size -= old.size
                self.dropped_samples += old.size
            wake, self._waiting = self._waiting, False
        if wake:
            try:
                self._notify()
            except RuntimeError:  # the event loop is closing
                pass

    def take(self) -> list[tuple[int, np.ndarray, float]]:
        """Everything buffered, oldest first; when empty, the next :meth:`put` notifies."""
        with self._lock:
            blocks = list(self._blocks)
            self._blocks.clear()
            self._size = 0
            if not blocks:
                self._waiting = True
            return blocks

    @property
    def depth_samples(self) -> int:
        with self._lock:
            return self._size


class _DeviceLost(Exception):
    pass


class MicSource:
    """A sounddevice ``InputStream`` at 16 kHz mono int16; reconnects with exponential backoff.

    When opening or streaming fails (device unplugged, PortAudio error, no audio for ``stall_s``), a
    :class:`SourceProblem` is yielded, the stream is closed and reopened after ``mic_retry_initial_s``,
    doubling up to ``mic_retry_max_s``. The timeline keeps running meanwhile, so the outage shows as a gap.
    """

    kind = "mic"
    speed: float | None = 1.0
    FIRST_AUDIO_S = 5.0

    def __init__(
        self,
        stream_id: str,
        device: str,
        *,
        config: AudioConfig,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        sounddevice: Any = None,
        find_device: Callable[[str], AudioDevice] = find_input_device,
        stall_s: float = 2.0,
    ) -> None:
        self.stream_id = stream_id
        self.device_spec = device
        self.name = device or "default input"
        self._cfg = config
        self._clock = clock
        self._sleep = sleep
        self._sd = sounddevice
        self._find_device = find_device
        self._rate = config.sample_rate_hz
        self._block = config.mic_block_ms * self._rate // 1000
        self._stall_s = max(stall_s, 4 * config.mic_block_ms / 1000)
        self._buffer: MicBuffer | None = None
        self._device_rate = self._rate  # what the device records at (16 kHz unless it cannot)
        self._dropped_before_s = 0.0
        self._end = 0  # timeline end of the last chunk delivered
        self.overflows = 0
        self.reconnects = 0
        self._failed = False  # set from PortAudio's thread
        self._failure = ""

    def stats(self) -> dict[str, float]:
        buf = self._buffer
        dropped_s = self._dropped_before_s + (buf.dropped_samples if buf else 0) / self._device_rate
        return {
            "dropped_s": round(dropped_s, 3),
            "buffered_s": (buf.depth_samples if buf else 0) / self._device_rate,
            "device_rate_hz": self._device_rate,
            "overflows": self.overflows,
            "reconnects": self.reconnects,
        }

    def __aiter__(self) -> AsyncIterator[SourceItem]:
        return self._run()

    async def _run(self) -> AsyncIterator[SourceItem]:
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        t0 = self._clock()
        delay = self._cfg.mic_retry_initial_s
        first = True

        def notify() -> None:  # runs in PortAudio's thread: schedule, never touch the Event directly
            loop.call_soon_threadsafe(wake.set)

        if self._sd is None:
            try:
                self._sd = load_sounddevice()
            except DeviceError as exc:  # no PortAudio library: retrying cannot help
                yield SourceProblem(self.stream_id, "source_failed", f"microphone: {exc}", fatal=True)
                return

        while True:
            buf = MicBuffer(round(self._cfg.mic_buffer_s * self._rate), notify)
            # The buffer counts this connection's samples from 0; the outage stays a gap on the
            # timeline, which never runs backwards.
            base = max(round((self._clock() - t0) * self._rate), self._end)
            if self._buffer is not None:
                self._dropped_before_s += self._buffer.dropped_samples / self._device_rate
            self._buffer = buf
            self._failed = False
            stream = None
            try:
                stream = await loop.run_in_executor(None, self._open, buf)
                first = False  # from now on a failure means the device was lost
                logger.info("%s: recording from %s", self.stream_id, self.name)
                async for chunk in self._drain(buf, wake, stream, base):
                    delay = self._cfg.mic_retry_initial_s  # audio flows again: reset the backoff
                    yield chunk
            except (DeviceError, _DeviceLost, OSError, RuntimeError, ValueError) as exc:
                code = "source_failed" if first else "device_lost"  # never opened yet vs. lost
                yield SourceProblem(self.stream_id, code, f"microphone {self.name!r}: {exc}; retrying in {delay:g} s")
                logger.warning("%s: microphone failed (%s); retrying in %g s", self.stream_id, exc, delay)
            finally:
                if stream is not None:
                    await loop.run_in_executor(None, _close_quietly, stream)
            self.reconnects += 1
            await self._sleep(delay)
            delay = min(delay * 2, self._cfg.mic_retry_max_s)

    def _open(self, buf: MicBuffer) -> Any:
        sd = self._sd
        dev = self._find_device(self.device_spec)
        self.name = f"{dev.index}: {dev.name}"

        def callback(indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
            # PortAudio's thread: copy, hand off, return. No waiting, no asyncio objects.
            if status and getattr(status, "input_overflow", False):
                self.overflows += 1
            buf.put(indata[:, 0].copy(), self._clock())

        def finished() -> None:
            if not self._failed:
                self._failed = True
                self._failure = "the input stream stopped"
                buf.put(np.zeros(0, dtype=np.int16), self._clock())  # wake the consumer

        def open_at(rate: int) -> Any:
            return sd.InputStream(
                device=dev.index,
                samplerate=rate,
                channels=1,
                dtype="int16",
                blocksize=self._cfg.mic_block_ms * rate // 1000,
                callback=callback,
                finished_callback=finished,
            )

        # sounddevice.PortAudioError (device unplugged, busy, unavailable) derives from Exception only:
        # turn it into DeviceError so the retry loop handles it instead of ending the stream.
        native = round(dev.default_sample_rate_hz)
        try:
            try:
                stream = open_at(self._rate)
                self._device_rate = self._rate
            except Exception as exc:
                # Hardware devices often record only at 44.1/48 kHz: record natively, resample here.
                if native == self._rate or native <= 0 or "sample rate" not in str(exc).lower():
                    raise
                stream = open_at(native)
                self._device_rate = native
                logger.info(
                    "%s: %s cannot record at %d Hz; recording at %d Hz and resampling",
                    self.stream_id,
                    self.name,
                    self._rate,
                    native,
                )
        except Exception as exc:
            raise DeviceError(str(exc)) from exc
        buf.capacity_samples = max(1, round(self._cfg.mic_buffer_s * self._device_rate))
        try:
            stream.start()
        except Exception as exc:
            _close_quietly(stream)
            raise DeviceError(str(exc)) from exc
        return stream

    async def _drain(self, buf: MicBuffer, wake: asyncio.Event, stream: Any, base: int) -> AsyncIterator[AudioChunk]:
        # Opening can take a moment before the first block (PulseAudio through ALSA): allow longer then.
        timeout = max(self._stall_s, self.FIRST_AUDIO_S)
        resampler = Resampler(self._device_rate, self._rate) if self._device_rate != self._rate else None
        while True:
            blocks = buf.take()
            if not blocks:
                wake.clear()
                blocks = buf.take()  # a put may have landed between take() and clear()
            if not blocks:
                try:
                    await asyncio.wait_for(wake.wait(), timeout=timeout)
                except TimeoutError:
                    raise _DeviceLost(f"no audio for {timeout:g} s") from None
                continue
            timeout = self._stall_s
            for start_in, block, captured in blocks:
                start, pcm = resampler.push(start_in, block) if resampler is not None else (start_in, block)
                if pcm.size:
                    self._end = base + start + pcm.size
                    yield AudioChunk(self.stream_id, base + start, pcm, captured)
            if self._failed or not getattr(stream, "active", True):
                raise _DeviceLost(self._failure or "the input stream is no longer active")


def _close_quietly(stream: Any) -> None:
    try:
        stream.abort()
    except Exception as exc:
        logger.debug("aborting the input stream failed: %s", exc)
    try:
        stream.close()
    except Exception as exc:
        logger.debug("closing the input stream failed: %s", exc)
