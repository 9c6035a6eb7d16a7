"""Loading the service's two models: Whisper and the emotion classifier, warmed up once per process."""

from __future__ import annotations

import logging

import numpy as np

from stream.config import Config
from stream.records import SAMPLE_RATE_HZ
from stream.stages.classifier import Predictor, load_predictor
from stream.stages.transcriber import Transcriber, WhisperTranscriber

__all__ = ["attach_audio_features", "load_models"]

logger = logging.getLogger(__name__)


def load_models(config: Config) -> tuple[Transcriber, Predictor]:
    """Load and warm up both models (blocking), so the first utterance does not pay for lazy loading."""
    checkpoint = str(config.resolve_path(config.classifier.checkpoint))
    predictor = load_predictor(checkpoint, device=config.classifier.device)
    transcriber = WhisperTranscriber.load(config.asr)
    attach_audio_features(predictor, transcriber)
    warm = np.zeros(SAMPLE_RATE_HZ, dtype=np.float32)  # one second of silence
    predictor.predict(["warm up"] if predictor.uses_text else [None], [warm] if predictor.uses_audio else [None])
    transcriber.transcribe(warm)
    return transcriber, predictor


def attach_audio_features(predictor: Predictor, transcriber: WhisperTranscriber) -> bool:
    """One Whisper in memory: the classifier's audio features use the transcriber's loaded model, and
    when it is the encoder pass they were trained on, its very output (``Transcript.features``)."""
    attach = getattr(predictor, "attach_asr", None)
    if attach is None:
        return False
    same = bool(
        attach(
            transcriber.model,
            model_sha256=transcriber.model_sha256,
            pad_s=transcriber.pad_s,
            compute_type=transcriber.compute_type,
        )
    )
    if same:
        transcriber.feature_hook = predictor.features_from_encoder  # type: ignore[attr-defined]
    logger.info(
        "audio features: %s",
        "from the ASR's own encoder pass" if same else "one more pass of the shared Whisper (it differs from training)",
    )
    return same
