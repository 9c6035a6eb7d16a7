"""The records that flow between the pipeline's parts, and the constants they share.

::

    source --AudioChunk/SourceProblem--> segment --SpeechBegan/Utterance--> transcribe --Transcribed-->
        classify --Classified--> report (events)

Every record is a frozen, slotted dataclass defined here once; the stages import them from here.
``SAMPLE_RATE_HZ`` and ``LABELS`` are defined by ``training`` (which never imports ``stream``: the
decoder and the classifier own them) and re-exported here so that ``stream`` has one place to look.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from training.audio import SAMPLE_RATE_HZ
from training.data import LABELS

__all__ = [
    "LABELS",
    "SAMPLE_RATE_HZ",
    "AudioChunk",
    "Classified",
    "PredictionLike",
    "SegmentItem",
    "SourceItem",
    "SourceProblem",
    "SpeechBegan",
    "Transcribed",
    "Transcript",
    "Utterance",
    "UtterancePreview",
    "same_audio",
]


# Sources ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """``pcm`` (int16 mono, 16 kHz) starts at ``start_sample`` of stream ``stream``."""

    stream: str
    start_sample: int
    pcm: np.ndarray
    arrival: float  # clock time when the chunk's last sample became available to the pipeline

    @property
    def end_sample(self) -> int:
        return self.start_sample + self.pcm.size


@dataclass(frozen=True, slots=True)
class SourceProblem:
    """A problem to report (``code`` from ``stream.protocol.ERROR_CODES``); fatal ones end the source."""

    stream: str
    code: str
    message: str
    fatal: bool = False


SourceItem = AudioChunk | SourceProblem


# Segmenting ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpeechBegan:
    """An utterance was confirmed on ``stream``; it begins at ``start_s`` (pre-roll included)."""

    stream: str
    utterance_id: str
    start_s: float


@dataclass(frozen=True, slots=True)
class Utterance:
    """A finished utterance of one stream, as the later stages see it (times on the source's timeline)."""

    stream: str
    utterance_id: str
    start_s: float
    end_s: float
    speech_end_s: float  # end of the last speech frame (``end_s`` adds the post-roll)
    audio: np.ndarray  # float32 mono 16 kHz in [-1, 1]
    speech_end_at: float  # clock time when the end of speech was heard (for ``latency_ms``)
    forced: bool = False
    # Ended at a turn boundary: the transcript the end-of-turn check already made of this audio (the same
    # model, the same words), reused by the transcriber, and the seconds it took.
    transcript: Transcript | None = None
    transcript_s: float = 0.0

    @property
    def duration_s(self) -> float:
        """Seconds of audio the utterance carries."""
        return self.audio.size / SAMPLE_RATE_HZ


@dataclass(frozen=True, slots=True)
class UtterancePreview:
    """The open ``utterance`` as it will be if the silence under way ends it (``vad.early_start_ms``).

    Not an event: the later stages may start on it (Whisper, the speaker embedding, audio features) and
    use that work when the :class:`Utterance` that follows has the same audio (:func:`same_audio`).
    """

    utterance: Utterance


def same_audio(a: Utterance, b: Utterance) -> bool:
    """Whether ``a`` and ``b`` are the same utterance with the same samples (a preview and its end)."""
    return (a.stream, a.utterance_id, a.start_s, a.end_s) == (b.stream, b.utterance_id, b.start_s, b.end_s)


SegmentItem = SpeechBegan | Utterance | UtterancePreview | SourceProblem


# Transcribing -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transcript:
    """Whisper's result for one utterance; ``text`` is empty when ``dropped`` names why."""

    text: str
    language: str
    avg_logprob: float
    no_speech_prob: float
    dropped: str | None = None  # "empty" | "no_speech" | "repetition" | "non_speech_marker"
    raw_text: str = ""  # what Whisper said before filtering
    # The audio branch's input, computed from this utterance's own Whisper encoder pass (see
    # WhisperTranscriber.feature_hook); None when no hook is set or the trimmed path was not taken.
    features: np.ndarray | None = field(default=None, compare=False, repr=False)
    # A quick reading that Whisper doubted and was not redone on the padded path (the end-of-turn check's, see
    # WhisperTranscriber.transcribe): enough to decide where a turn ends, never reused as an utterance's transcript.
    doubted: bool = False


@dataclass(frozen=True, slots=True)
class Transcribed:
    """An utterance with its transcript, or the error that prevented one."""

    utterance: Utterance
    transcript: Transcript | None
    error: str | None = None
    asr_s: float = 0.0  # seconds spent in Whisper
    speaker: str | None = None  # "S1", "S2", ... from the speaker stage (None: unknown or stage off)


# Classifying --------------------------------------------------------------------------------------


class PredictionLike(Protocol):
    """What the classifier stage needs of a prediction (``training.inference.Prediction`` is one)."""

    @property
    def label(self) -> str: ...
    @property
    def scores(self) -> dict[str, float]: ...
    @property
    def modalities(self) -> tuple[str, ...]: ...


@dataclass(frozen=True, slots=True)
class Classified:
    """The decision for one utterance; ``prediction`` is None when ``error`` says why.

    ``unclassifiable`` marks a row that had no usable modality (an empty transcript and no audio
    branch): not a failure, so no ``error`` event is sent for it.
    """

    item: Transcribed
    prediction: PredictionLike | None
    error: str | None = None
    batch_size: int = 1
    unclassifiable: bool = False
    # The past utterances of the stream the text branch read (None: the stage reads no context,
    # because it is off or the checkpoint has no context module).
    context_ids: tuple[str, ...] | None = None
