"""The trimmed-input Whisper transcription the asr_padding benchmark compares with faster-whisper's."""

from __future__ import annotations

import shutil

import pytest

from bench.asr_padding import transcribe_padded, transcribe_trimmed
from bench.make_testset import synthesize
from bench.throughput import load_whisper
from stream.evaluation.evaluate import word_errors


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_trimmed_and_padded_transcripts_of_a_sentence() -> None:
    text = "The weather is lovely today and we should go for a walk."
    audio = synthesize(text)
    model = load_whisper("tiny.en")
    assert word_errors(text, transcribe_padded(model, audio)).wer < 0.3
    assert word_errors(text, transcribe_trimmed(model, audio, 1.0)).wer < 0.3
