"""``--source`` values -> sources: the microphone (default, an index or a name) or media files.

Each source gets a unique stream id: ``mic``, ``mic2``, ``mic-usb-audio``, or the file's stem.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from stream.config import Config
from stream.protocol import SERVICE_STREAM
from stream.sources.base import Source
from stream.sources.mic import MicSource
from stream.sources.replay import ReplaySource

__all__ = ["DEMO_PATH", "SourceError", "SourceSpec", "build_sources", "parse_sources"]

DEMO_PATH = Path(__file__).resolve().parents[1] / "assets" / "demo.flac"
_MEDIA_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".mp4", ".mkv", ".webm", ".mov", ".avi"}


class SourceError(ValueError):
    """A ``--source`` value that cannot be used."""


@dataclass(frozen=True, slots=True)
class SourceSpec:
    stream_id: str
    kind: str  # "mic" | "file"
    target: str  # device spec ("" = default) or file path


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")[:64] or "stream"


def parse_sources(specs: Sequence[str]) -> list[SourceSpec]:
    """``mic`` / a device index or name / a media path -> unique stream ids (``mic``, file stems)."""
    found: list[SourceSpec] = []
    used: set[str] = set()
    for raw in specs or (str(DEMO_PATH),):
        spec = raw.strip()
        if not spec:
            raise SourceError("--source must not be empty; use 'mic', a device index or name, or a media file")
        path = Path(spec).expanduser()
        if spec in ("mic", "default"):
            kind, target, base = "mic", "", "mic"
        elif spec.isdigit():
            kind, target, base = "mic", spec, f"mic{spec}"
        elif path.exists() or path.suffix.lower() in _MEDIA_SUFFIXES or "/" in spec:
            if not path.is_file():
                raise SourceError(f"--source {spec}: no such file")
            kind, target, base = "file", str(path), _slug(path.stem)
        else:
            kind, target, base = "mic", spec, f"mic-{_slug(spec)}"
        stream_id, n = base, 2
        while stream_id in used or stream_id == SERVICE_STREAM:
            stream_id, n = f"{base}-{n}", n + 1
        used.add(stream_id)
        found.append(SourceSpec(stream_id, kind, target))
    return found


def build_sources(specs: Sequence[SourceSpec], config: Config, *, clock: Callable[[], float]) -> list[Source]:
    audio = config.audio
    sources: list[Source] = []
    for spec in specs:
        if spec.kind == "mic":
            sources.append(MicSource(spec.stream_id, spec.target or audio.mic_device, config=audio, clock=clock))
        else:
            sources.append(
                ReplaySource(
                    spec.stream_id,
                    spec.target,
                    chunk_ms=audio.replay_chunk_ms,
                    speed=audio.replay_speed,
                    fast=audio.replay_fast,
                    clock=clock,
                )
            )
    return sources
