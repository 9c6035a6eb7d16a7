"""Shared test helpers: speech and media (:mod:`.speech`), model fakes (:mod:`.fakes`), stage drivers
(:mod:`.stages`). Import them from here: ``from tests.helpers import make_dialogue, ScriptedPredictor``.
The whole service in a task (:mod:`.service`, which imports the service) is imported from its module."""

from tests.helpers.fakes import FakePredictor, FakeTranscriber, ScriptedPredictor, ScriptedTranscriber
from tests.helpers.speech import (
    ASR_COMPUTE_TYPES,
    ASR_SENTENCES,
    Dialogue,
    espeak_available,
    make_dialogue,
    make_video_mp4,
    requires_espeak,
    requires_ffmpeg,
    synthesize,
    tone,
    word_error_rate,
    write_wav,
)
from tests.helpers.stages import audio_chunks, feed, run_stage

__all__ = [
    "ASR_COMPUTE_TYPES",
    "ASR_SENTENCES",
    "Dialogue",
    "FakePredictor",
    "FakeTranscriber",
    "ScriptedPredictor",
    "ScriptedTranscriber",
    "audio_chunks",
    "espeak_available",
    "feed",
    "make_dialogue",
    "make_video_mp4",
    "requires_espeak",
    "requires_ffmpeg",
    "run_stage",
    "synthesize",
    "tone",
    "word_error_rate",
    "write_wav",
]
