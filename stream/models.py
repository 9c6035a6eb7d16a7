"""Loading the service's two models: Whisper and the emotion classifier, warmed up once per process."""

from __future__ import annotations

import numpy as np

from stream.config import Config
from stream.records import SAMPLE_RATE_HZ
from stream.stages.classifier import Predictor, load_predictor
from stream.stages.transcriber import Transcriber, WhisperTranscriber

__all__ = ["load_models"]


def load_models(config: Config) -> tuple[Transcriber, Predictor]:
    """Load and warm up both models (blocking), so the first utterance does not pay for lazy loading."""
    checkpoint = str(config.resolve_path(config.classifier.checkpoint))
    predictor = load_predictor(checkpoint, device=config.classifier.device)
    transcriber = WhisperTranscriber.load(config.asr)
    warm = np.zeros(SAMPLE_RATE_HZ, dtype=np.float32)  # one second of silence
    predictor.predict(["warm up"] if predictor.uses_text else [None], [warm] if predictor.uses_audio else [None])
    transcriber.transcribe(warm)
    return transcriber, predictor
