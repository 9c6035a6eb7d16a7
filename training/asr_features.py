"""Audio features from the ASR's own Whisper encoder pass: one encoder, shared by training and serving.

The live transcriber encodes each utterance once, followed by ``pad_s`` seconds of silence, with the
int8 CTranslate2 Whisper it decodes with (its *trimmed* path). This module owns that encoder input
(:func:`asr_window_s`, :func:`asr_log_mel`), so the transcriber and the trainer build it the same
way, and turns the encoder output into the audio branch's input (:func:`pool_utterance`):

* the utterance's **speech span** is found from the waveform alone (:func:`speech_span`): runs of
  20 ms frames (one per encoder frame) louder than ``max(peak - 30 dB, noise floor + 10 dB)``, first
  to last, with 40 ms either side. The floor is the utterance's own 10th-percentile frame energy, so
  the VAD's pre/post-roll and low-level background noise are left out of the pooling whether the
  utterance came from a clean clip or a noisy stream;
* the encoder frames of that span are pooled: mean and standard deviation (2 x width values);
* prosody (:func:`training.prosody.prosody_features`) of the same span is appended, and (checkpoints
  trained with them) its spectral and voice-quality statistics (:mod:`training.acoustic`).

The trainer encodes every clip through :class:`AsrEncoder`, which loads the same faster-whisper
model with the same compute type the service uses (int8 on CPU), so a clip's features in training and
the same clip's features in the stream differ only by what the stream adds (roll, noise, level),
which the trainer's augmentation (:mod:`training.augment`) imitates.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from training.acoustic import ACOUSTIC_DIM, acoustic_features
from training.prosody import PROSODY_DIM, pitch_track, prosody_features
from training.weights import resolve_asr_model

__all__ = [
    "ENCODER_FRAME_SAMPLES",
    "AsrEncoder",
    "asr_log_mel",
    "asr_window_s",
    "pool_utterance",
    "speech_clip",
    "speech_span",
]

logger = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 16000
WINDOW_S = 30
ENCODER_FRAME_SAMPLES = 320  # Whisper's encoder halves the 10 ms mel rate: one frame per 20 ms


def asr_window_s(n_samples: int, pad_s: float) -> int:
    """Seconds the trimmed ASR path encodes for ``n_samples`` of audio: utterance + ``pad_s``, whole
    seconds, at most Whisper's 30 s window."""
    return min(WINDOW_S, max(1, math.ceil(n_samples / SAMPLE_RATE_HZ + pad_s)))


def asr_log_mel(feature_extractor: Any, audio: np.ndarray, seconds: int) -> np.ndarray:
    """Log-mel of ``audio`` followed by silence, ``seconds`` long (faster-whisper's extractor).

    The silence is in the waveform, so that it is normalised like silence in a recording; zeros
    appended to the log-mel (faster-whisper's padding) make ``base`` loop on short inputs.
    """
    wave = np.zeros(seconds * SAMPLE_RATE_HZ, dtype=np.float32)
    n = min(audio.size, wave.size)
    wave[:n] = audio[:n]
    return np.asarray(feature_extractor(wave, padding=0)[:, : seconds * 100])


def _frame_db(audio: np.ndarray) -> np.ndarray:
    n = max(1, math.ceil(audio.size / ENCODER_FRAME_SAMPLES))
    padded = np.zeros(n * ENCODER_FRAME_SAMPLES, dtype=np.float64)
    padded[: audio.size] = audio
    power = np.mean(padded.reshape(n, ENCODER_FRAME_SAMPLES) ** 2, axis=1)
    return np.asarray(10.0 * np.log10(power + 1e-10))


def speech_span(
    audio: np.ndarray,
    *,
    below_peak_db: float = 30.0,
    above_floor_db: float = 10.0,
    min_run: int = 3,
    margin_frames: int = 2,
) -> tuple[int, int]:
    """``(first, end)`` encoder frames (20 ms each, ``end`` exclusive) holding the utterance's speech.

    A frame is active when louder than ``max(peak - below_peak_db, floor + above_floor_db)`` (at most
    15 dB under the peak), the floor being the utterance's 10th-percentile frame energy; only runs of
    ``min_run`` active frames count, so clicks and breaths in the pauses do not widen the span.
    Silence-only or very short audio gives the whole range.
    """
    db = _frame_db(np.asarray(audio, dtype=np.float32))
    n = db.size
    peak = float(db.max())
    floor = float(np.percentile(db, 10))
    threshold = min(max(peak - below_peak_db, floor + above_floor_db), peak - 15.0)
    loud = db > threshold
    # frames inside a run of >= min_run loud frames
    runs = np.convolve(loud.astype(np.int32), np.ones(min_run, dtype=np.int32), mode="valid") >= min_run
    active = np.flatnonzero(runs)
    if active.size == 0 or peak < -75.0:
        return 0, n
    first = max(0, int(active[0]) - margin_frames)
    end = min(n, int(active[-1]) + min_run + margin_frames)
    if end - first < 5:  # under 100 ms: too little to pool; keep everything
        return 0, n
    return first, end


def _span_frames(audio: np.ndarray, n_frames: int | None = None) -> tuple[int, int]:
    """``speech_span`` within the audio and the first ``n_frames`` encoder frames (default: all that
    cover the audio, as the trimmed ASR path's output always does)."""
    first, end = speech_span(audio)
    end = min(end, max(1, math.ceil(audio.size / ENCODER_FRAME_SAMPLES)), end if n_frames is None else n_frames)
    return min(first, end - 1), end


def _span_samples(audio: np.ndarray, first: int, end: int) -> np.ndarray:
    clip = audio[first * ENCODER_FRAME_SAMPLES : end * ENCODER_FRAME_SAMPLES]
    return clip if clip.size else audio


def speech_clip(audio: np.ndarray) -> np.ndarray:
    """The samples of ``audio``'s speech span, as :func:`pool_utterance` measures prosody and acoustics on."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    return _span_samples(audio, *_span_frames(audio))


def pool_utterance(
    audio: np.ndarray, frames: np.ndarray, *, prosody: bool = True, acoustic: bool = False
) -> np.ndarray:
    """The audio branch's input for one utterance: pooled encoder frames of its speech span + prosody
    (+ the span's spectral and voice-quality statistics, :mod:`training.acoustic`, with ``acoustic``).

    ``frames``: the encoder output for ``audio`` (``(n, width)``, frame ``k`` covering samples
    ``[320 k, 320 k + 320)``; frames beyond the audio, from the silence padding, may be included and
    are ignored).
    """
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    first, end = _span_frames(audio, frames.shape[0])
    span = np.asarray(frames[first:end], dtype=np.float32)
    parts = [span.mean(axis=0), span.std(axis=0)]
    clip = _span_samples(audio, first, end)
    f0 = pitch_track(clip) if (prosody or acoustic) else None  # once for both
    if prosody:
        parts.append(prosody_features(clip, f0=f0))
    if acoustic:
        parts.append(acoustic_features(clip, f0=f0))
    return np.concatenate(parts).astype(np.float32)


@dataclass(frozen=True, slots=True)
class EncoderIdentity:
    """What decides the encoder output: stored with the checkpoint, compared with the live ASR."""

    model_id: str
    sha256: str
    compute_type: str
    pad_s: float


class AsrEncoder:
    """The service's Whisper encoder pass, usable outside the service (training, evaluation, fallback).

    Loads faster-whisper's ``WhisperModel`` exactly as the transcriber does (CPU: int8) unless an
    already loaded one is passed in (``model=``), so serving keeps a single copy in memory.
    Thread-safe (CTranslate2 queues concurrent calls).
    """

    def __init__(
        self,
        whisper_model: str = "base",
        *,
        pad_s: float = 8.0,
        compute_type: str = "int8",
        cpu_threads: int = 0,
        model: Any = None,
    ) -> None:
        resolved = resolve_asr_model(whisper_model)
        self.identity = EncoderIdentity(
            resolved.model_id, str(resolved.provenance.get("sha256", resolved.path)), compute_type, float(pad_s)
        )
        self._path = resolved.path
        self._packaged = resolved.packaged
        self._cpu_threads = cpu_threads
        self._model = model
        self._lock = threading.Lock()

    @property
    def model(self) -> Any:
        with self._lock:
            if self._model is None:
                from faster_whisper import WhisperModel

                self._model = WhisperModel(
                    self._path,
                    device="cpu",
                    compute_type=self.identity.compute_type,
                    cpu_threads=self._cpu_threads,
                    local_files_only=self._packaged,
                )
                logger.info(
                    "loaded Whisper %s (%s) for audio features", self.identity.model_id, self.identity.compute_type
                )
            return self._model

    def encode(self, audio: np.ndarray) -> np.ndarray:
        """Encoder frames ``(n, width)`` of ``audio`` as the transcriber's trimmed path computes them
        (utterance + ``pad_s`` silence, one pass; longer than 30 s: 30 s windows, concatenated)."""
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        model = self.model
        out = []
        window = WINDOW_S * SAMPLE_RATE_HZ
        for start in range(0, max(1, audio.size), window):
            piece = audio[start : start + window]
            seconds = asr_window_s(piece.size, self.identity.pad_s)
            encoded = model.encode(asr_log_mel(model.feature_extractor, piece, seconds))
            frames = np.asarray(encoded, dtype=np.float32)[0]
            out.append(frames[: max(1, math.ceil(piece.size / ENCODER_FRAME_SAMPLES))])
        return np.concatenate(out)

    def features(self, audio: np.ndarray, *, prosody: bool = True, acoustic: bool = False) -> np.ndarray:
        """:func:`pool_utterance` over this encoder's frames of ``audio``."""
        return pool_utterance(audio, self.encode(audio), prosody=prosody, acoustic=acoustic)


def feature_dim(width: int, prosody: bool, acoustic: bool = False) -> int:
    return 2 * width + (PROSODY_DIM if prosody else 0) + (ACOUSTIC_DIM if acoustic else 0)
