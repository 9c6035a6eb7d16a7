"""What the page may ask of the running service: classify a sentence, add a stream (a file, its microphone).

:class:`LiveControl` is the :class:`stream.api.Backend` of the HTTP API and the owner of the browser
ingest streams' ids. Every stream it adds is an ordinary source run by the same :class:`Pipeline`, so its
events reach every subscriber and the event log like any ``--source``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stream.api import ApiError, stream_name
from stream.config import Config
from stream.pipeline import Pipeline
from stream.protocol import prediction_data
from stream.sources import ReplaySource, Source
from stream.sources.ingest import IngestSource
from training.audio import AudioDecodeError, iter_audio_chunks

__all__ = ["LiveControl"]

logger = logging.getLogger(__name__)


class LiveControl:
    """Adds streams to ``pipeline`` and classifies sentences with its classifier stage."""

    def __init__(self, config: Config, pipeline: Pipeline, run_id: str, *, clock: Callable[[], float]) -> None:
        self.config = config
        self.pipeline = pipeline
        self.run_id = run_id
        self._clock = clock
        self._cleanups: set[asyncio.Task[None]] = set()

    # -- a sentence ----------------------------------------------------------------------------

    async def classify_text(self, text: str) -> dict[str, Any]:
        try:
            pred = await self.pipeline.classifier.classify_text(text)
        except ValueError as exc:  # no text branch in this checkpoint
            raise ApiError(409, "unavailable", str(exc)) from None
        return {"text": text, **prediction_data(pred)}

    # -- new streams ---------------------------------------------------------------------------

    def unique_id(self, name: str) -> str:
        """``name``, or ``name-2``, ``name-3``... when taken in this run."""
        stream_id, n = name, 2
        while self.pipeline.has_stream(stream_id) or stream_id.startswith("_"):
            stream_id, n = f"{name}-{n}", n + 1
        return stream_id

    def add(self, source: Source, display_name: str) -> None:
        """Start ``source`` in the pipeline (ApiError 503 when the service is stopping)."""
        try:
            self.pipeline.add_source(source)
        except RuntimeError as exc:
            raise ApiError(503, "unavailable", f"cannot start a stream now: {exc}") from None
        logger.info("stream %s added (%s: %s)", source.stream_id, source.kind, display_name)

    def upload_dir(self) -> Path:
        return self.config.resolve_path(self.config.server.upload_dir) / self.run_id

    async def add_file_stream(self, name: str, path: Path, *, display_name: str) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, _probe, path)
        except AudioDecodeError as exc:
            why = _short(exc, path, display_name)
            raise ApiError(415, "bad_request", f"not a media file with audio ({why})") from None
        audio = self.config.audio
        stream_id = self.unique_id(name)
        source = ReplaySource(
            stream_id,
            path,
            chunk_ms=audio.replay_chunk_ms,
            speed=audio.replay_speed,
            fast=audio.replay_fast,
            clock=self._clock,
        )
        source.name = display_name
        self.add(source, display_name)
        if not self.config.server.keep_uploads:
            task = asyncio.create_task(self._delete_when_ended(stream_id, path), name=f"upload-cleanup-{stream_id}")
            self._cleanups.add(task)
            task.add_done_callback(self._cleanups.discard)
        return {"stream": stream_id, "name": display_name, "kind": "file"}

    async def _delete_when_ended(self, stream_id: str, path: Path) -> None:
        """Delete an uploaded file once its stream has sent ``end`` (``server.keep_uploads = false``).

        If the service stops first, the file stays: the replay may not have read all of it.
        """
        await self.pipeline.wait_ended([stream_id])
        try:
            await asyncio.get_running_loop().run_in_executor(None, path.unlink)
        except OSError as exc:
            logger.warning("could not delete the upload %s after its stream ended: %s", path, exc)
        else:
            logger.info("upload %s deleted: stream %s has ended (server.keep_uploads = false)", path.name, stream_id)

    def add_ingest(self, name: str, make: Callable[[str], IngestSource]) -> IngestSource:
        """A browser microphone as a new stream (the ingest endpoint's ``add``); ValueError to refuse."""
        try:
            stream_id = self.unique_id(stream_name(name))
            source = make(stream_id)
            self.add(source, name)
        except ApiError as exc:
            raise ValueError(exc.message) from None
        return source


def _probe(path: Path) -> None:
    """Decode the first 100 ms (AudioDecodeError when it is no audio file)."""
    chunks = iter_audio_chunks(path, chunk_samples=1600)
    try:
        next(chunks, None)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:  # closes the file now
            close()


def _short(exc: Exception, path: Path, display_name: str) -> str:
    """The decoder's reason in the user's terms: their file's name, not where we stored it."""
    text = str(exc).replace(f"'{path}'", "").replace(str(path), repr(display_name))
    text = re.sub(r"\[Errno -?\d+\]\s*", "", text)
    return " ".join(text.split()).rstrip(": ")[:200]
