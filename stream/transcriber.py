"""Whisper transcription: the blocking :class:`WhisperTranscriber` and its async :class:`TranscribeStage`.

faster-whisper's ``transcribe`` returns a *lazy* generator: the decoding happens while it is
iterated, so :meth:`WhisperTranscriber.transcribe` calls ``list(segments)`` itself and the stage
runs that whole call in a one-worker executor -- the event loop never decodes.

Whisper invents text for non-speech ("Thank you.", repeated phrases, "[Music]"). Such text is dropped
by :func:`hallucination_reason` with the reason kept; the utterance still goes on to the classifier,
which then uses the audio alone.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from stream.config import ASRConfig
from stream.segmenter import Utterance
from training.weights import ModelError, hub_failure_message, resolve_asr_model

__all__ = [
    "TranscribeStage",
    "Transcribed",
    "Transcriber",
    "Transcript",
    "WhisperTranscriber",
    "hallucination_reason",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Transcript:
    """Whisper's result for one utterance; ``text`` is empty when ``dropped`` names why."""

    text: str
    language: str
    avg_logprob: float
    no_speech_prob: float
    dropped: str | None = None  # "empty" | "no_speech" | "repetition" | "non_speech_marker"
    raw_text: str = ""  # what Whisper said before filtering


@dataclass(frozen=True, slots=True)
class Transcribed:
    """An utterance with its transcript, or the error that prevented one."""

    utterance: Utterance
    transcript: Transcript | None
    error: str | None = None
    asr_s: float = 0.0  # seconds spent in Whisper


class Transcriber(Protocol):
    model_id: str

    def transcribe(self, audio: np.ndarray) -> Transcript: ...


_MARKER = re.compile(r"\[[^\]]*\]|\([^)]*\)|[♪♫*]+")


def hallucination_reason(
    text: str,
    avg_logprob: float,
    no_speech_prob: float,
    *,
    no_speech_threshold: float = 0.6,
    min_avg_logprob: float = -1.0,
) -> str | None:
    """Why Whisper's ``text`` should not be trusted as speech, or ``None`` when it looks real.

    * ``no_speech``: Whisper itself thinks there is no speech *and* is unsure of its words (the
      same rule Whisper uses to skip silent windows);
    * ``empty`` / ``non_speech_marker``: nothing but whitespace, punctuation or "[Music]"-style tags;
    * ``repetition``: one word or phrase looped (a classic decoding failure on noise).
    """
    if no_speech_prob > no_speech_threshold and avg_logprob < min_avg_logprob:
        return "no_speech"
    stripped = _MARKER.sub(" ", text)
    words = re.findall(r"[^\W_]+(?:'[^\W_]+)?", stripped.lower())
    if not words:
        return "non_speech_marker" if _MARKER.search(text) else "empty"
    if len(words) >= 6:
        for n in (1, 2, 3, 4):
            grams = [tuple(words[i : i + n]) for i in range(0, len(words) - n + 1)]
            top = max(grams.count(g) for g in set(grams))
            if top >= 4 and top * n >= 0.6 * len(words):
                return "repetition"
    return None


class WhisperTranscriber:
    """faster-whisper with the packaged weights; blocking -- call from a worker thread."""

    def __init__(self, model: Any, cfg: ASRConfig, *, model_id: str = "", english_only: bool = False) -> None:
        self._model = model
        self._cfg = cfg
        self.model_id = model_id or cfg.model
        self._language = "en" if english_only else (cfg.language or None)

    @classmethod
    def load(cls, cfg: ASRConfig) -> WhisperTranscriber:
        """Resolve ``asr.model`` offline and load it (int8 on CPU, float16 on CUDA when ``auto``)."""
        from faster_whisper import WhisperModel

        resolved = resolve_asr_model(cfg.model)
        device = _whisper_device(cfg.device)
        compute = cfg.compute_type
        if compute == "auto":
            compute = "float16" if device == "cuda" else "int8"
        index = int(cfg.device.split(":", 1)[1]) if cfg.device.startswith("cuda:") else 0
        try:
            model = WhisperModel(
                resolved.path,
                device=device,
                device_index=index,
                compute_type=compute,
                cpu_threads=cfg.cpu_threads,
                local_files_only=resolved.packaged,
            )
        except Exception as exc:
            if not resolved.packaged and resolved.provenance.get("hub"):
                raise ModelError(hub_failure_message("asr", cfg.model, exc)) from exc
            raise ModelError(f"could not load Whisper model {cfg.model!r} from {resolved.path}: {exc}") from exc
        english_only = not getattr(model.model, "is_multilingual", True)
        logger.info("Whisper %s on %s (%s)", resolved.model_id, device, compute)
        return cls(model, cfg, model_id=resolved.model_id, english_only=english_only)

    def transcribe(self, audio: np.ndarray) -> Transcript:
        segments, info = self._model.transcribe(
            np.asarray(audio, dtype=np.float32),
            language=self._language,
            beam_size=self._cfg.beam_size,
            temperature=0.0,  # no fallback re-decoding: latency matters more; loops are caught below
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,  # our own VAD already cut the utterance
        )
        segs = list(segments)  # the decoding happens here, in this (worker) thread
        raw = " ".join(s.text.strip() for s in segs).strip()
        tokens = [max(1, len(s.tokens)) for s in segs]
        avg_logprob = float(np.average([s.avg_logprob for s in segs], weights=tokens)) if segs else -10.0
        no_speech = max((float(s.no_speech_prob) for s in segs), default=1.0)
        reason = hallucination_reason(
            raw,
            avg_logprob,
            no_speech,
            no_speech_threshold=self._cfg.no_speech_threshold,
            min_avg_logprob=self._cfg.min_avg_logprob,
        )
        return Transcript(
            text="" if reason else raw,
            language=str(info.language or self._language or ""),
            avg_logprob=round(avg_logprob, 4),
            no_speech_prob=round(no_speech, 4),
            dropped=reason,
            raw_text=raw,
        )


def _whisper_device(device: str) -> str:
    if device.startswith("cuda"):
        return "cuda"
    if device == "auto":
        try:
            import ctranslate2

            return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        except Exception:  # a CPU-only CTranslate2 build
            return "cpu"
    return "cpu"


class TranscribeStage:
    """``Utterance`` in, ``Transcribed`` out, one at a time in a dedicated Whisper thread.

    A failure on one utterance becomes ``Transcribed(error=...)`` and the stream goes on.
    """

    def __init__(
        self,
        transcriber: Transcriber,
        *,
        executor: Executor | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._transcriber = transcriber
        self._executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="whisper")
        self._clock = clock
        self.audio_s = 0.0  # audio transcribed so far
        self.busy_s = 0.0  # time spent transcribing it

    @property
    def rtf(self) -> float:
        """Real-time factor: seconds of Whisper per second of audio (< 1 keeps up with live audio)."""
        return self.busy_s / self.audio_s if self.audio_s else 0.0

    async def run(self, inp: AsyncIterator[Utterance]) -> AsyncIterator[Transcribed]:
        loop = asyncio.get_running_loop()
        async for utt in inp:
            t0 = self._clock()
            try:
                transcript = await loop.run_in_executor(self._executor, self._transcriber.transcribe, utt.audio)
                error = None
            except Exception as exc:
                logger.exception("transcribing %s failed", utt.utterance_id)
                transcript, error = None, f"transcription failed: {type(exc).__name__}: {exc}"
            spent = self._clock() - t0
            self.busy_s += spent
            self.audio_s += utt.audio.size / 16000
            yield Transcribed(utt, transcript, error, spent)

