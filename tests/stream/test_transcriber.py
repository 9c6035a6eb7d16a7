"""Whisper stage: hallucination rules, the lazy generator consumed off the loop, failures, real tiny.en."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from conftest import ScriptedTranscriber, synthesize, word_error_rate

from stream.config import ASRConfig
from stream.segmenter import Utterance
from stream.transcriber import TranscribeStage, WhisperTranscriber, hallucination_reason
from training.weights import ModelError


def utt(i: int, seconds: float = 1.0) -> Utterance:
    return Utterance("s", f"s-{i}", float(i), float(i) + seconds, float(i) + seconds, np.zeros(int(16000 * seconds),
                     np.float32), 0.0)


async def feed(items: list[Utterance]) -> AsyncIterator[Utterance]:
    for item in items:
        yield item


@pytest.mark.parametrize(
    ("text", "logprob", "no_speech", "reason"),
    [
        ("I can't believe you did that.", -0.2, 0.05, None),
        ("Thank you.", -1.4, 0.8, "no_speech"),
        ("Thank you.", -0.3, 0.8, None),  # confident words win over the no-speech guess
        ("", -0.2, 0.1, "empty"),
        (" ... ", -0.2, 0.1, "empty"),
        ("[Music]", -0.5, 0.3, "non_speech_marker"),
        ("(applause) ♪", -0.5, 0.3, "non_speech_marker"),
        ("the the the the the the the the", -0.4, 0.2, "repetition"),
        ("I'm sorry. I'm sorry. I'm sorry. I'm sorry. I'm sorry.", -0.4, 0.2, "repetition"),
        ("no, no, no, no, I said it was fine and you know it was", -0.4, 0.2, None),
    ],
)
def test_hallucination_rules(text: str, logprob: float, no_speech: float, reason: str | None) -> None:
    assert hallucination_reason(text, logprob, no_speech) == reason


@dataclass
class _Seg:
    text: str
    avg_logprob: float
    no_speech_prob: float
    tokens: list[int] = field(default_factory=lambda: [1, 2, 3])


@dataclass
class _Info:
    language: str = "en"


class LazyModel:
    """Mimics faster-whisper: ``transcribe`` returns a generator that does the work when iterated."""

    def __init__(self, segs: list[_Seg]) -> None:
        self.segs = segs
        self.iterated_in: list[str] = []
        self.model = type("M", (), {"is_multilingual": False})()

    def transcribe(self, audio: np.ndarray, **kw: Any) -> tuple[Iterator[_Seg], _Info]:
        def gen() -> Iterator[_Seg]:
            self.iterated_in.append(threading.current_thread().name)
            time.sleep(0.2)  # "decoding"
            yield from self.segs

        return gen(), _Info()


async def test_the_lazy_segment_generator_is_consumed_in_the_worker_thread_not_the_loop() -> None:
    model = LazyModel([_Seg(" Hello", -0.2, 0.01), _Seg(" there.", -0.4, 0.02, [1])])
    stage = TranscribeStage(WhisperTranscriber(model, ASRConfig(), english_only=True))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    tick = asyncio.create_task(ticker())
    out = [t async for t in stage.run(feed([utt(0)]))]
    tick.cancel()
    assert model.iterated_in and model.iterated_in[0] != threading.main_thread().name
    assert ticks >= 10  # the loop kept running during the 0.2 s decode
    (item,) = out
    assert item.transcript is not None and item.transcript.text == "Hello there."
    assert item.transcript.avg_logprob == pytest.approx((-0.2 * 3 - 0.4 * 1) / 4)
    assert item.transcript.no_speech_prob == pytest.approx(0.02)
    assert item.transcript.language == "en"
    assert item.asr_s >= 0.2 and stage.rtf > 0


async def test_hallucinated_text_is_dropped_but_the_utterance_goes_on() -> None:
    model = LazyModel([_Seg(" Thank you.", -1.5, 0.9)])
    (item,) = [t async for t in TranscribeStage(WhisperTranscriber(model, ASRConfig())).run(feed([utt(0)]))]
    assert item.transcript is not None
    assert (item.transcript.text, item.transcript.dropped, item.transcript.raw_text) == ("", "no_speech", "Thank you.")


async def test_a_failure_on_one_utterance_is_reported_and_the_rest_continue() -> None:
    stage = TranscribeStage(ScriptedTranscriber(["one", None, "three"]))  # type: ignore[arg-type]
    out = [t async for t in stage.run(feed([utt(0), utt(1), utt(2)]))]
    assert [o.utterance.utterance_id for o in out] == ["s-0", "s-1", "s-2"]
    assert out[1].transcript is None and "scripted transcription failure" in (out[1].error or "")
    assert [o.transcript.text for o in (out[0], out[2]) if o.transcript] == ["one", "three"]


def test_a_hub_name_that_cannot_load_offline_names_the_packaged_alternatives(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="tiny.en") as info:
        WhisperTranscriber.load(ASRConfig(model="someone/whisper-nonexistent", device="cpu"))
    assert "someone/whisper-nonexistent" in str(info.value) and "internet" in str(info.value)


@pytest.mark.slow
def test_packaged_tiny_en_transcribes_espeak_speech_and_drops_silence() -> None:
    asr = WhisperTranscriber.load(ASRConfig(model="tiny.en", device="cpu"))
    assert "tiny.en" in asr.model_id
    text = "I can't believe you would do something like that."
    got = asr.transcribe(synthesize(text))
    assert got.dropped is None and got.language == "en"
    assert word_error_rate(text, got.text) < 0.25, got.text
    silent = asr.transcribe(np.zeros(16000, np.float32))
    assert silent.text == "" and silent.dropped is not None
