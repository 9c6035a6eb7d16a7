"""Browser ingest: a page's microphone, sent over ``ws://HOST:PORT/ingest``, as a new stream.

The client sends a text frame ``{"type": "start", "stream": NAME, "sample_rate_hz": R}``, gets
``{"type": "started", "stream": ID, "sample_rate_hz": R}``, then sends binary frames of little-endian
int16 mono PCM at R Hz, and ``{"type": "stop"}`` (or just closes: a closed tab) to end. Refusals are a
text frame ``{"type": "error", "code", "message"}`` and a close.

:class:`IngestSource` is an ordinary source (16 kHz int16 :class:`AudioChunk`s) run by the same pipeline
as any ``--source``. Back-pressure: it buffers at most ``server.ingest_buffer_s`` seconds; beyond that
:meth:`IngestSource.push` waits, the endpoint stops reading the socket, and TCP pushes back on the page
(which then drops audio itself, counted, rather than queue it without bound). Limits: frame size
(``ingest_max_frame_bytes``, 1009 on a larger frame), streams at once (``ingest_max_streams``) and per
client address (``ingest_streams_per_client``, 1013 beyond), and ``ingest_idle_timeout_s`` without audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable

import numpy as np
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from stream.client_messages import parse_ingest_message
from stream.config import ServerConfig
from stream.protocol import ProtocolError
from stream.records import SAMPLE_RATE_HZ, AudioChunk, SourceItem, SourceProblem
from stream.sources.resample import Resampler

__all__ = ["IngestEndpoint", "IngestSource"]

logger = logging.getLogger(__name__)


class IngestSource:
    """Audio pushed by the ingest endpoint, resampled to 16 kHz; ends when :meth:`finish` is called."""

    kind = "browser"
    speed: float | None = 1.0  # live audio

    def __init__(
        self,
        stream_id: str,
        *,
        name: str,
        sample_rate_hz: int,
        buffer_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream_id = stream_id
        self.name = name
        self.sample_rate_hz = sample_rate_hz
        self._clock = clock
        self._capacity = max(1, round(buffer_s * sample_rate_hz))
        self._blocks: deque[tuple[np.ndarray, float] | None] = deque()
        self._buffered = 0
        self._changed = asyncio.Event()
        self._resampler = Resampler(sample_rate_hz, SAMPLE_RATE_HZ) if sample_rate_hz != SAMPLE_RATE_HZ else None
        self._in = 0  # input samples received
        self._out = 0  # 16 kHz samples delivered
        self._problem: SourceProblem | None = None
        self.waits = 0  # pushes that waited for room (back-pressure on the page)

    def stats(self) -> dict[str, float]:
        return {
            "audio_s": round(self._in / self.sample_rate_hz, 3),
            "buffered_s": round(self._buffered / self.sample_rate_hz, 3),
            "sample_rate_hz": self.sample_rate_hz,
            "backpressure_waits": self.waits,
        }

    async def push(self, pcm: np.ndarray) -> None:
        """Queue int16 samples at the client's rate; waits while ``buffer_s`` seconds are queued."""
        if self._buffered >= self._capacity:
            self.waits += 1
            while self._buffered >= self._capacity:
                self._changed.clear()
                await self._changed.wait()
        self._blocks.append((pcm, self._clock()))
        self._buffered += pcm.size
        self._in += pcm.size
        self._changed.set()

    def finish(self, problem: SourceProblem | None = None) -> None:
        """No more audio: what is queued is still delivered, then the stream ends (after ``problem``)."""
        self._problem = problem
        self._blocks.append(None)
        self._changed.set()

    def __aiter__(self) -> AsyncIterator[SourceItem]:
        return self._run()

    async def _run(self) -> AsyncIterator[SourceItem]:
        while True:
            while not self._blocks:
                self._changed.clear()
                await self._changed.wait()
            block = self._blocks.popleft()
            if block is None:
                break
            pcm, arrival = block
            self._buffered -= pcm.size
            self._changed.set()  # room for the pusher
            start_in = self._in - self._buffered - pcm.size
            if self._resampler is not None:
                _, pcm = self._resampler.push(start_in, pcm)
            if pcm.size:
                yield AudioChunk(self.stream_id, self._out, pcm, arrival)
                self._out += pcm.size
        if self._problem is not None:
            yield self._problem


class IngestEndpoint:
    """Serves ``/ingest`` connections: limits, the start message, frames into an :class:`IngestSource`.

    ``add(name, make)`` picks a free stream id for ``name``, makes the source with ``make(id)``, starts it
    in the running service and returns it (``stream.control.LiveControl.add_ingest``); it raises
    ``ValueError`` with a reason to refuse.
    """

    def __init__(
        self,
        config: ServerConfig,
        add: Callable[[str, Callable[[str], IngestSource]], IngestSource],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._add = add
        self._clock = clock
        self.active: dict[str, IngestSource] = {}
        self._per_client: Counter[str] = Counter()
        self.refused = 0

    async def _refuse(self, ws: ServerConnection, code: str, message: str, close: int) -> None:
        self.refused += 1
        logger.warning("refused an ingest stream: %s", message)
        with contextlib.suppress(ConnectionClosed):
            await ws.send(json.dumps({"type": "error", "code": code, "message": message}))
            await ws.close(close, message[:120])

    async def handle(self, ws: ServerConnection) -> None:
        cfg = self.config
        client = str(ws.remote_address[0]) if ws.remote_address else "?"
        if len(self.active) >= cfg.ingest_max_streams:
            n = cfg.ingest_max_streams
            await self._refuse(ws, "busy", f"at most {n} browser microphones at once", CloseCode.TRY_AGAIN_LATER)
            return
        if self._per_client[client] >= cfg.ingest_streams_per_client:
            n = cfg.ingest_streams_per_client
            await self._refuse(ws, "busy", f"at most {n} microphone stream(s) per client", CloseCode.TRY_AGAIN_LATER)
            return
        self._per_client[client] += 1
        try:
            await self._serve(ws)
        finally:
            self._per_client[client] -= 1
            if self._per_client[client] <= 0:
                del self._per_client[client]

    async def _serve(self, ws: ServerConnection) -> None:
        idle = self.config.ingest_idle_timeout_s
        try:
            raw = await asyncio.wait_for(ws.recv(), idle)
            start = parse_ingest_message(raw)
            if start.type != "start":
                raise ProtocolError("bad_request", 'the first message must be {"type": "start", ...}')
        except TimeoutError:
            await self._refuse(ws, "bad_request", f"no start message within {idle:g} s", CloseCode.POLICY_VIOLATION)
            return
        except ProtocolError as exc:
            await self._refuse(ws, exc.code, exc.message, CloseCode.POLICY_VIOLATION)
            return
        except ConnectionClosed:
            return
        assert start.stream is not None and start.sample_rate_hz is not None
        rate = start.sample_rate_hz
        buffer_s = self.config.ingest_buffer_s

        def make(stream_id: str) -> IngestSource:
            return IngestSource(stream_id, name=start.stream or stream_id, sample_rate_hz=rate, buffer_s=buffer_s,
                                clock=self._clock)  # fmt: skip

        try:
            source = self._add(start.stream, make)
        except ValueError as exc:
            await self._refuse(ws, "unavailable", str(exc), CloseCode.TRY_AGAIN_LATER)
            return
        stream_id = source.stream_id
        self.active[stream_id] = source
        problem: SourceProblem | None = None
        try:
            await ws.send(json.dumps({"type": "started", "stream": stream_id, "sample_rate_hz": rate}))
            problem = await self._pump(ws, source)
        except ConnectionClosed:
            pass  # the tab closed: a clean end
        finally:
            source.finish(problem)
            del self.active[stream_id]
            logger.info("ingest stream %s ended (%.1f s of audio)", stream_id, source.stats()["audio_s"])

    async def _pump(self, ws: ServerConnection, source: IngestSource) -> SourceProblem | None:
        """Frames into ``source`` until stop/close (None) or a problem that ends the stream."""
        idle = self.config.ingest_idle_timeout_s
        while True:
            try:
                frame = await asyncio.wait_for(ws.recv(), idle)
            except TimeoutError:
                message = f"no audio from the page for {idle:g} s (server.ingest_idle_timeout_s); stream ended"
                with contextlib.suppress(ConnectionClosed):
                    await ws.close(CloseCode.NORMAL_CLOSURE, "idle")
                return SourceProblem(source.stream_id, "source_failed", message, fatal=False)
            if isinstance(frame, bytes):
                if len(frame) % 2:
                    message = f"audio frames must be int16 samples (an even byte count), got {len(frame)} bytes"
                    await ws.close(CloseCode.INVALID_DATA, "odd frame size")
                    return SourceProblem(source.stream_id, "source_failed", message, fatal=False)
                await source.push(np.frombuffer(frame, dtype="<i2").astype(np.int16))
                continue
            try:
                msg = parse_ingest_message(frame)
            except ProtocolError as exc:
                await ws.send(json.dumps({"type": "error", "code": exc.code, "message": exc.message}))
                continue
            if msg.type == "stop":
                with contextlib.suppress(ConnectionClosed):
                    await ws.close(CloseCode.NORMAL_CLOSURE, "stopped")
                return None
            await ws.send(json.dumps({"type": "error", "code": "bad_request", "message": "already started"}))
