"""The asr_padding benchmark runs the service's transcriber with a 30 s window and trimmed inputs."""

from __future__ import annotations

import shutil

import pytest

from bench.asr_padding import transcribers
from bench.make_testset import synthesize
from stream.evaluation import word_errors


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_padded_and_trimmed_transcripts_of_a_sentence_share_one_model() -> None:
    text = "The weather is lovely today and we should go for a walk."
    audio = synthesize(text)
    (padded_label, padded), (trimmed_label, trimmed) = transcribers("tiny.en", [1.0])
    assert padded.model is trimmed.model
    # tiny.en's int8 transcript of espeak speech differs between CPUs (on an AMD EPYC it hears "The
    # weather is" as "that we are very": WER 0.42 on both paths), so the bound only rules out garbage.
    assert word_errors(text, padded.transcribe(audio).raw_text).wer < 0.5
    assert word_errors(text, trimmed.transcribe(audio).raw_text).wer < 0.5
    assert padded.paths["padded"] == 1 and trimmed.paths["padded"] + trimmed.paths["trimmed"] == 1
