"""Audio sources: the microphone (sounddevice) and replay of media files (PyAV).

A source is an async iterator of :class:`AudioChunk` (16 kHz mono int16 with its exact start sample
on the source's own timeline) and :class:`SourceProblem` (something to report as an ``error`` event).
A gap between consecutive chunks' samples means audio was dropped.

Overflow policy: file replay is never lossy -- when the pipeline falls behind it simply reads the
file later (back-pressure). The microphone cannot wait, so its PortAudio callback only copies the
block into :class:`MicBuffer`, which keeps at most ``audio.mic_buffer_s`` seconds and drops the
*oldest* audio beyond that, counting the dropped samples for ``stats``.
"""

# The records sources yield (defined in stream.records), importable from here too.
from stream.records import AudioChunk, SourceItem, SourceProblem
from stream.sources.base import Source, to_int16
from stream.sources.mic import MicBuffer, MicSource
from stream.sources.replay import ReplaySource

__all__ = [
    "AudioChunk",
    "MicBuffer",
    "MicSource",
    "ReplaySource",
    "Source",
    "SourceItem",
    "SourceProblem",
    "to_int16",
]
