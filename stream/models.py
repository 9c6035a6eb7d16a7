"""Loading the service's models: Whisper and the emotion classifier, warmed up once per process, and the
speaker stage (GE2E encoder, enrolled voices)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stream.config import Config
from stream.protocol import MAX_SPEAKER_NAME_CHARS
from stream.records import SAMPLE_RATE_HZ
from stream.stages.classifier import Predictor, load_predictor
from stream.stages.speakers import SpeakerStage
from stream.stages.transcriber import Transcriber
from stream.stages.whisper import WhisperTranscriber

__all__ = ["attach_audio_features", "load_models", "load_speaker_stage", "parse_enrolment", "speaker_stage_or_none"]

logger = logging.getLogger(__name__)


def load_models(config: Config) -> tuple[Transcriber, Predictor]:
    """Load and warm up both models (blocking), so the first utterance does not pay for lazy loading."""
    checkpoint = str(config.resolve_path(config.classifier.checkpoint))
    predictor = load_predictor(checkpoint, device=config.classifier.device, text_dtype=config.classifier.text_dtype)
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


def parse_enrolment(specs: Sequence[str]) -> list[tuple[str, Path]]:
    """``--speaker NAME=CLIP`` values -> (name, path); raises ``ValueError`` naming the bad one."""
    out: list[tuple[str, Path]] = []
    for spec in specs:
        name, sep, clip = spec.partition("=")
        name = " ".join(name.split())
        if not sep or not name or not clip.strip():
            raise ValueError(f"--speaker {spec!r}: expected NAME=CLIP, e.g. --speaker Ross=ross.wav")
        if len(name) > MAX_SPEAKER_NAME_CHARS:
            raise ValueError(f"--speaker {spec!r}: the name is longer than {MAX_SPEAKER_NAME_CHARS} characters")
        path = Path(clip.strip()).expanduser()
        if not path.is_file():
            raise ValueError(f"--speaker {spec!r}: clip not found: {path}")
        if name in {n for n, _ in out}:
            raise ValueError(f"--speaker {spec!r}: {name!r} is enrolled twice")
        out.append((name, path))
    return out


def load_speaker_stage(config: Config, enrol: Sequence[tuple[str, Path]] = (), encoder: Any = None) -> SpeakerStage:
    """The speaker stage for ``[speakers]`` (blocking: loads the encoder, embeds the enrolment clips)."""
    from stream.stages.speaker_encoder import SpeakerEncoder
    from training.audio import load_audio

    cfg = config.speakers
    if encoder is None:
        name = cfg.encoder if cfg.encoder == "ge2e" else str(config.resolve_path(cfg.encoder))
        encoder = SpeakerEncoder.load(name)
        encoder.embed(np.zeros(SAMPLE_RATE_HZ, dtype=np.float32) + 1e-3)  # first-call allocations, not in the run
    stage = SpeakerStage(encoder, cfg.clustering(), min_audio_s=cfg.min_audio_ms / 1000)
    for name, path in enrol:
        audio = load_audio(path)
        if audio.size < SAMPLE_RATE_HZ:
            raise ValueError(f"--speaker {name}={path}: the clip is shorter than 1 s; give a few seconds of speech")
        stage.enrol(name, audio)
    return stage


async def speaker_stage_or_none(config: Config, enrolment: Sequence[tuple[str, Path]]) -> SpeakerStage | None:
    """The speaker stage; without its encoder (e.g. Resemblyzer not installed) the run goes on unlabelled,
    with a warning -- unless speakers were enrolled, which cannot work without it (then it raises)."""
    from training.weights import ModelError

    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(None, load_speaker_stage, config, enrolment)
    except ModelError as exc:
        if enrolment:
            raise
        logger.warning("no speaker labels this run: %s", exc)
        return None
