"""Stream/training parity of the audio branch, with the shipped checkpoint and the packaged Whisper.

A clip streamed through the service's path (VAD + segmenter cut it out of a noisy stream with pre- and
post-roll; the transcriber's own encoder pass yields its features) and the same clip through the
training path (the clip file, :class:`training.asr_features.AsrEncoder`) must give the same features
within tolerance, and the same label wherever the training path is sure of it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.make_ravdess_stream import build_stream
from bench.stream_features import segment
from stream.config import ASRConfig, Config
from stream.models import attach_audio_features
from stream.stages.whisper import WhisperTranscriber
from training.audio import load_audio
from training.augment import coloured_noise

REPO = Path(__file__).resolve().parents[2]
RAVDESS = Path(os.environ.get("EMOSTREAM_DATA_DIR", REPO.parent / "shared" / "data")) / "ravdess"
CHECKPOINT = REPO / "models" / "emostream-default.pt"
# Held-out actors (never trained on), several emotions and both sentences.
CLIPS = (
    "03-01-05-02-01-01-17.flac",
    "03-01-04-01-02-02-18.flac",
    "03-01-03-02-02-01-19.flac",
    "03-01-06-01-02-02-20.flac",
    "03-01-01-01-01-01-17.flac",
    "03-01-08-02-02-02-18.flac",
)


@pytest.mark.slow
def test_a_clip_streamed_through_the_service_gets_the_training_paths_features_and_label() -> None:
    paths = [RAVDESS / name for name in CLIPS]
    if not all(p.is_file() for p in paths):
        pytest.skip(f"RAVDESS clips not found under {RAVDESS} (see ../shared/data/README.md)")
    from training.inference import EmotionPredictor

    predictor = EmotionPredictor.from_checkpoint(CHECKPOINT, device="cpu")
    transcriber = WhisperTranscriber.load(ASRConfig(model="base", device="cpu"))
    assert attach_audio_features(predictor, transcriber), "the shipped audio branch must use the ASR's encoder pass"
    clips = [load_audio(p) for p in paths]
    audio, spans = build_stream([(str(p), a) for p, a in zip(paths, clips, strict=True)], seed=3)
    # light background noise over the whole stream (the clips are clean recordings)
    audio = audio + np.float32(10 ** (-60 / 20)) * coloured_noise(audio.size, "pink", np.random.default_rng(0))
    utts = segment(audio, Config())  # the service's own VAD and segmenter (pre/post-roll included)
    assert len(utts) == len(clips)
    for (start, end, _), (s, e) in zip(utts, spans, strict=True):
        assert start / 16000 < s and end / 16000 > e  # the roll around the speech is in the utterance
    streamed = []
    for _, _, pcm in utts:
        transcript = transcriber.transcribe(pcm)
        assert transcript.features is not None
        streamed.append(transcript.features)
    trained = predictor.audio_features(clips)  # the training path: the clip files as they are
    assert predictor.fusion is not None
    branch = predictor.fusion.branch
    z_stream = branch.standardise(torch.from_numpy(np.stack(streamed))).numpy()
    z_train = branch.standardise(torch.from_numpy(trained)).numpy()
    dist = np.linalg.norm(z_stream[:, None, :] - z_train[None, :, :], axis=2)
    # Within tolerance: each streamed utterance is nearer its own clip than any other clip (different
    # emotions, actors and sentences), and no farther from it than the clips' typical spread.
    np.testing.assert_array_equal(dist.argmin(axis=1), np.arange(len(clips)), err_msg=str(dist.round(1)))
    spread = np.median(np.linalg.norm(z_train[:, None] - z_train[None, :], axis=2)[~np.eye(len(clips), dtype=bool)])
    assert np.diag(dist).max() < spread, (np.diag(dist).round(1), spread)
    # The same label wherever the training path is sure of it (probability >= 0.5). A label the clip path
    # itself hesitates on may flip with the added noise: the quietest clip here peaks at -39 dBFS, 21 dB
    # over it. Over the 238 clips of the dev streams the two paths agree on 87 % (clean) and 74 % (-55 dBFS)
    # of the labels (README, "Spectral and voice-quality statistics").
    pairs = list(zip(
        predictor.predict_features([None] * len(clips), list(streamed)),
        predictor.predict_features([None] * len(clips), list(trained)),
        strict=True,
    ))  # fmt: skip
    sure = [(a, b) for a, b in pairs if max(b.scores.values()) >= 0.5]
    assert len(sure) >= len(clips) // 2, [round(max(b.scores.values()), 2) for _, b in pairs]
    assert all(a.label == b.label for a, b in sure), [
        (a.label, b.label, round(max(b.scores.values()), 2)) for a, b in pairs
    ]
