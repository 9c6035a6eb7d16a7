"""Whisper transcription: the blocking :class:`WhisperTranscriber`, run by the transcription stage.

faster-whisper's ``transcribe`` returns a *lazy* generator: the decoding happens while it is
iterated, so :meth:`WhisperTranscriber.transcribe` calls ``list(segments)`` itself and the stage
runs that whole call in a one-worker executor -- the event loop never decodes.

Whisper's 30 s window is mostly padding for a 2-5 s utterance, and on CPU the encoder pass over it
dominates. :class:`WhisperTranscriber` therefore encodes utterances up to 30 s with only
``asr.pad_s`` seconds of silence after them and decodes that encoder output directly with
CTranslate2 (the *trimmed* path: same greedy decoding, prompt, token suppression and scores as
faster-whisper). The trailing silence matters: with 0-1 s ``base`` falls into decoding loops, and
with under ~8 s it misdetects the language of short utterances more often. Utterances longer than
30 s, and all of them when ``asr.pad_s = 30``, take faster-whisper's ``transcribe`` (the *padded*
path); so does a trimmed result that looped or that Whisper doubts (see :class:`WhisperTranscriber`).

Whisper invents text for non-speech ("Thank you.", repeated phrases, "[Music]"). Such text is dropped
by :func:`hallucination_reason` with the reason kept, and a decode stuck in a loop
(:func:`decoding_loop`) is dropped as ``repetition``; the utterance still goes on to the
classifier, which then uses the audio alone.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream.config import ASRConfig
from stream.records import SAMPLE_RATE_HZ, Transcript
from training.asr_features import ENCODER_FRAME_SAMPLES, asr_log_mel, asr_window_s
from training.device import ctranslate2_device
from training.weights import ModelError, hub_failure_message, resolve_asr_model

__all__ = ["WhisperTranscriber", "decoding_loop", "hallucination_reason", "token_budget"]

logger = logging.getLogger(__name__)


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


WINDOW_S = 30  # Whisper's window; longer utterances are decoded window by window by faster-whisper
MAX_LENGTH = 448  # Whisper's decoder context (prompt + generated tokens)
# The trimmed decode's token budget: far above real speech (English is ~4 tokens/s, fast Japanese
# ~10), so a decode that uses all of it is looping; the bound caps what a loop costs. The padded
# path gets twice as much, so that a fast speaker it redoes is never cut short.
TOKENS_PER_S = 12
EXTRA_TOKENS = 16
# Below this probability the language detected on the short window is a guess (faster-whisper's
# language_detection_threshold); base misreads 1-2 s English lines as Thai or Japanese that way.
MIN_LANGUAGE_PROB = 0.5


def token_budget(seconds: float) -> int:
    """Tokens the trimmed path may generate for ``seconds`` of audio."""
    return EXTRA_TOKENS + math.ceil(TOKENS_PER_S * min(seconds, WINDOW_S))


@dataclass(frozen=True, slots=True)
class _Decoded:
    text: str
    language: str
    avg_logprob: float
    no_speech_prob: float
    looped: bool  # the decode ran into its token budget or ended in a repeated n-gram
    language_prob: float = 1.0  # of the detected language; 1.0 when it was given
    features: np.ndarray | None = None  # feature_hook's result on the encoder output


class WhisperTranscriber:
    """faster-whisper with the packaged weights; blocking -- call from a worker thread.

    ``stateless``: a result depends on the audio alone, so the pipeline may also ask it about an open
    utterance (the end-of-turn check).

    Utterances up to 30 s take the trimmed path (see the module docstring). Its result is redone on
    the padded path when it looped, or when it is empty or Whisper doubts it (no-speech probability
    above ``asr.no_speech_threshold``, average log-prob below ``asr.min_avg_logprob``, or a detected
    language below ``MIN_LANGUAGE_PROB``): non-speech and very short lines are where the short
    window errs more than the 30 s one, and speech that Whisper is sure of never pays for the check.
    ``paths`` counts what happened: ``trimmed`` (kept), ``padded``, and of those, ``loop_redone`` and
    ``unsure_redone``; a quick reading (``redo=False``) that would have been redone counts as ``loop_kept`` or
    ``unsure_kept``.

    One encoder pass for both branches: with ``feature_hook`` set (``(audio, encoder frames) ->
    feature vector``, see ``EmotionPredictor.attach_asr``), the trimmed path hands its encoder output
    over and the transcript carries the audio branch's features; no second encoder runs.
    """

    stateless = True

    def __init__(
        self,
        model: Any,
        cfg: ASRConfig,
        *,
        model_id: str = "",
        english_only: bool = False,
        model_sha256: str = "",
        compute_type: str = "",
    ) -> None:
        self._model = model
        self._cfg = cfg
        self.model_id = model_id or cfg.model
        self.model_sha256 = model_sha256
        self.compute_type = compute_type
        self.english_only = english_only
        self._language = "en" if english_only else (cfg.language or None)
        self._english_only = english_only
        self.paths: Counter[str] = Counter()
        self.feature_hook: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
        self.feature_failures = 0

    @property
    def pad_s(self) -> float:
        return float(self._cfg.pad_s)

    @property
    def provides_features(self) -> bool:
        """Whether transcripts carry the audio branch's features (trimmed path, hook set)."""
        return self.feature_hook is not None and self._cfg.pad_s < WINDOW_S

    @classmethod
    def load(cls, cfg: ASRConfig) -> WhisperTranscriber:
        """Resolve ``asr.model`` offline and load it (int8 on CPU, float16 on CUDA when ``auto``)."""
        from faster_whisper import WhisperModel

        resolved = resolve_asr_model(cfg.model)
        device, index = ctranslate2_device(cfg.device)
        compute = cfg.compute_type
        if compute == "auto":
            compute = "float16" if device == "cuda" else "int8"
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
        logger.info("Whisper %s on %s (%s), pad_s %g", resolved.model_id, device, compute, cfg.pad_s)
        return cls(
            model,
            cfg,
            model_id=resolved.model_id,
            english_only=english_only,
            model_sha256=str(resolved.provenance.get("sha256", "")),
            compute_type=compute,
        )

    @property
    def model(self) -> Any:
        """The faster-whisper ``WhisperModel`` (benchmarks time it alone; share it between transcribers)."""
        return self._model

    def with_options(self, cfg: ASRConfig) -> WhisperTranscriber:
        """Another transcriber on the same loaded model with other decoding options (e.g. ``pad_s``)."""
        return WhisperTranscriber(
            self._model,
            cfg,
            model_id=self.model_id,
            english_only=self.english_only,
            model_sha256=self.model_sha256,
            compute_type=self.compute_type,
        )

    def transcribe(self, audio: np.ndarray, *, redo: bool = True) -> Transcript:
        """Whisper's transcript of ``audio``. ``redo=False`` (a quick reading: the end-of-turn check's) keeps a
        trimmed result that would be redone on the padded path, marked ``doubted``: the redo takes ~1 s of
        CPU on a 2-core machine, and the check holds the segmentation of everything after it meanwhile."""
        audio = np.asarray(audio, dtype=np.float32)
        decoded = None
        features = None
        doubted = False
        if self._cfg.pad_s < WINDOW_S and audio.size <= WINDOW_S * SAMPLE_RATE_HZ:
            decoded = self._decode_trimmed(audio)
            features = decoded.features  # from this encoder pass, valid even if the text is redone
            why = self._redo_reason(decoded)
            if why and redo:
                logger.debug("redoing a trimmed decode on the padded path (%s): %r", why, decoded.text[:80])
                self.paths[f"{why}_redone"] += 1
                decoded = None
            else:
                self.paths[f"{why}_kept" if why else "trimmed"] += 1
                doubted = bool(why)
        if decoded is None:
            decoded = self._decode_padded(audio)
            self.paths["padded"] += 1
        reason = "repetition" if decoded.looped else None
        reason = reason or hallucination_reason(
            decoded.text,
            decoded.avg_logprob,
            decoded.no_speech_prob,
            no_speech_threshold=self._cfg.no_speech_threshold,
            min_avg_logprob=self._cfg.min_avg_logprob,
        )
        return Transcript(
            text="" if reason else decoded.text,
            language=decoded.language,
            avg_logprob=round(decoded.avg_logprob, 4),
            no_speech_prob=round(decoded.no_speech_prob, 4),
            dropped=reason,
            raw_text=decoded.text,
            features=features,
            doubted=doubted,
        )

    def _redo_reason(self, decoded: _Decoded) -> str | None:
        if decoded.looped:
            return "loop"
        if (
            not decoded.text
            or decoded.no_speech_prob > self._cfg.no_speech_threshold
            or decoded.avg_logprob < self._cfg.min_avg_logprob
            or decoded.language_prob < MIN_LANGUAGE_PROB
        ):
            return "unsure"
        return None

    def _decode_padded(self, audio: np.ndarray) -> _Decoded:
        """faster-whisper's own ``transcribe``: 30 s windows, any length."""
        segments, info = self._model.transcribe(
            audio,
            language=self._language,
            beam_size=self._cfg.beam_size,
            temperature=0.0,  # no fallback re-decoding: latency matters more; loops are caught later
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,  # our own VAD already cut the utterance
            max_new_tokens=min(MAX_LENGTH - 8, 2 * token_budget(audio.size / SAMPLE_RATE_HZ)),
        )
        segs = list(segments)  # the decoding happens here, in this (worker) thread
        raw = " ".join(s.text.strip() for s in segs).strip()
        tokens = [max(1, len(s.tokens)) for s in segs]
        avg_logprob = float(np.average([s.avg_logprob for s in segs], weights=tokens)) if segs else -10.0
        no_speech = max((float(s.no_speech_prob) for s in segs), default=1.0)
        looped = any(decoding_loop(s.tokens) for s in segs)
        return _Decoded(raw, str(info.language or self._language or ""), avg_logprob, no_speech, looped)

    def _decode_trimmed(self, audio: np.ndarray) -> _Decoded:
        """One encoder pass over the utterance plus ``pad_s`` of silence, then one greedy decode.

        Mirrors faster-whisper's first window (prompt, suppressed tokens, scores, log-prob average)
        without the 30 s padding, and detects the language on the same encoder output.
        """
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        model = self._model
        seconds = asr_window_s(audio.size, self._cfg.pad_s)
        encoded = model.encode(asr_log_mel(model.feature_extractor, audio, seconds))
        features = self._features(audio, encoded)
        language, language_prob = self._language, 1.0
        if language is None:
            ((token, language_prob), *_) = model.model.detect_language(encoded)[0]
            language = str(token)[2:-2]  # "<|de|>" -> "de"
        tokenizer = Tokenizer(model.hf_tokenizer, not self._english_only, task="transcribe", language=language)
        prompt = model.get_prompt(tokenizer, [], without_timestamps=True)
        budget = min(MAX_LENGTH - len(prompt) - 1, token_budget(audio.size / SAMPLE_RATE_HZ))
        result = model.model.generate(
            encoded,
            [prompt],
            beam_size=self._cfg.beam_size,
            patience=1,
            max_length=len(prompt) + budget + 1,  # CTranslate2 counts the prompt and the end token
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=list(get_suppressed_tokens(tokenizer, (-1,)) or ()),
        )[0]
        tokens = list(result.sequences_ids[0])
        # CTranslate2 returns the length-normalised score; faster-whisper turns it back into a sum
        # (length_penalty 1) and averages it over the tokens plus the end token.
        avg_logprob = float(result.scores[0]) * len(tokens) / (len(tokens) + 1)
        text = str(tokenizer.decode(tokens)).strip()
        looped = len(tokens) >= budget or decoding_loop(tokens)
        return _Decoded(
            text, language, avg_logprob, float(result.no_speech_prob), looped, float(language_prob), features
        )

    def _features(self, audio: np.ndarray, encoded: Any) -> np.ndarray | None:
        """``feature_hook`` over the encoder frames of the utterance; None (counted) when it fails,
        e.g. an encoder output left on a GPU: the classifier then computes the features itself."""
        if self.feature_hook is None:
            return None
        try:
            frames = np.asarray(encoded, dtype=np.float32)[0, : max(1, math.ceil(audio.size / ENCODER_FRAME_SAMPLES))]
            return np.asarray(self.feature_hook(audio, frames), dtype=np.float32)
        except Exception:
            self.feature_failures += 1
            logger.warning("audio features from the encoder output failed", exc_info=True)
            return None


def decoding_loop(tokens: Sequence[int], *, min_repeats: int = 4, min_tokens: int = 20, max_n: int = 16) -> bool:
    """Whether ``tokens`` end in an n-gram repeated back to back: a greedy decode stuck in a loop.

    It takes ``min_repeats`` copies covering at least ``min_tokens`` tokens, so "no, no, no, no"
    (real speech) is not a loop, while " no no no ..." up to the token budget is.
    """
    size = len(tokens)
    for n in range(1, max_n + 1):
        if size < n * min_repeats:
            break
        tail = list(tokens[size - n :])
        repeats = 1
        while (repeats + 1) * n <= size and list(tokens[size - (repeats + 1) * n : size - repeats * n]) == tail:
            repeats += 1
        if repeats >= min_repeats and repeats * n >= min_tokens:
            return True
    return False
