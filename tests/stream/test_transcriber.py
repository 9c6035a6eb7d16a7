"""Whisper stage: hallucination and loop rules, the lazy generator consumed off the loop, failures, and the
trimmed (utterance + ``pad_s`` of silence) and padded (30 s window) paths with the packaged tiny.en and base."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from stream.config import ASRConfig
from stream.records import Utterance
from stream.stages.transcriber import TranscribeStage
from stream.stages.whisper import WhisperTranscriber, decoding_loop, hallucination_reason
from tests.helpers import (
    ASR_COMPUTE_TYPES,
    ASR_SENTENCES,
    ScriptedTranscriber,
    make_dialogue,
    synthesize,
    word_error_rate,
)
from training.weights import ModelError


def utt(i: int, seconds: float = 1.0) -> Utterance:
    return Utterance(
        "s", f"s-{i}", float(i), float(i) + seconds, float(i) + seconds, np.zeros(int(16000 * seconds), np.float32), 0.0
    )


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
    stage = TranscribeStage(WhisperTranscriber(model, ASRConfig(pad_s=30), english_only=True))
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
    asr = WhisperTranscriber(model, ASRConfig(pad_s=30))
    (item,) = [t async for t in TranscribeStage(asr).run(feed([utt(0)]))]
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


@pytest.mark.parametrize(
    ("tokens", "looped"),
    [
        ([7] * 30, True),  # " no no no ..." to the budget
        ([1, 2, 3, 4, 5] + [8, 9, 10, 11, 12] * 5, True),  # a phrase looped after real words
        ([7, 13] * 4, False),  # "no, no, no, no": real speech
        ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], False),
        ([1, 2] + [5, 6, 7] * 8 + [9], False),  # the repeats are not at the end: the decode finished
        ([], False),
    ],
)
def test_decoding_loop_finds_a_repeated_tail(tokens: list[int], looped: bool) -> None:
    assert decoding_loop(tokens) is looped


def test_an_utterance_over_30_s_or_pad_s_30_uses_faster_whispers_own_windows() -> None:
    # LazyModel has no encoder: the trimmed path would fail on it.
    model = LazyModel([_Seg(" Long talk.", -0.2, 0.01)])
    asr = WhisperTranscriber(model, ASRConfig(pad_s=5), english_only=True)
    assert asr.transcribe(np.zeros(16000 * 31, np.float32)).text == "Long talk."
    asr = WhisperTranscriber(model, ASRConfig(pad_s=30), english_only=True)
    assert asr.transcribe(np.zeros(16000 * 3, np.float32)).text == "Long talk."
    assert asr.paths == {"padded": 1}


def test_pad_s_is_checked() -> None:
    from stream.config import ConfigError
    from training.settings import load_section

    with pytest.raises(ConfigError, match=r"asr\.pad_s"):
        load_section(ASRConfig, {"pad_s": 31}, "asr")


# Real packaged weights ----------------------------------------------------------------------------
# Each runs under int8 and float32 (see conftest.ASR_COMPUTE_TYPES): an expectation on Whisper's words
# must hold on every CPU, so it is a bound on several sentences' joint WER, with margin.


@functools.cache
def whisper(model: str, compute_type: str) -> WhisperTranscriber:
    """One loaded model per (model, compute type), shared by the tests of this module."""
    return WhisperTranscriber.load(ASRConfig(model=model, device="cpu", compute_type=compute_type))


@pytest.fixture(params=ASR_COMPUTE_TYPES)
def tiny_en(request: pytest.FixtureRequest) -> WhisperTranscriber:
    return whisper("tiny.en", request.param)


@pytest.fixture(params=ASR_COMPUTE_TYPES)
def base(request: pytest.FixtureRequest) -> WhisperTranscriber:
    return whisper("base", request.param)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny.en", "base"])
@pytest.mark.parametrize("compute_type", ASR_COMPUTE_TYPES)
def test_the_trimmed_path_transcribes_espeak_speech(model: str, compute_type: str) -> None:
    asr = whisper(model, compute_type)
    before = asr.paths.copy()
    got = [asr.transcribe(synthesize(text)) for text in ASR_SENTENCES]
    texts = [g.text for g in got]
    # joint WER 0.04-0.06 here (tiny.en and base, int8 and float32): a bound 3x above that
    assert word_error_rate(" ".join(ASR_SENTENCES), " ".join(texts)) < 0.2, texts
    for g in got:
        assert g.dropped is None and g.language == "en", g  # the default language, and tiny.en's only one
        assert g.avg_logprob > -1.0 and g.no_speech_prob < 0.6, g
    taken = asr.paths - before
    assert taken.total() == len(ASR_SENTENCES) and taken["trimmed"] >= len(ASR_SENTENCES) - 1, taken


@pytest.mark.slow
def test_base_detects_the_language_on_the_trimmed_encoder_output(base: WhisperTranscriber) -> None:
    detecting = WhisperTranscriber(base._model, ASRConfig(model="base", language=""))  # detection is an option
    # espeak-ng's Spanish is far from natural speech: base hears some of its lines as Thai or Italian (on
    # every CPU). These two it identifies under int8 and float32 alike (WER 0 and 0.19 here).
    spanish = (
        "No sé por qué te fuiste tan temprano esta mañana.",
        "El tren sale a las nueve de la mañana desde la estación central de la ciudad.",
    )
    got = [detecting.transcribe(synthesize(text, voice="es")) for text in spanish]
    assert [g.language for g in got] == ["es", "es"], got
    assert word_error_rate(" ".join(spanish), " ".join(g.text for g in got)) < 0.3, got
    assert detecting.paths["trimmed"] >= 1, detecting.paths


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny.en", "base"])
@pytest.mark.parametrize("compute_type", ASR_COMPUTE_TYPES)
async def test_silence_and_noise_give_no_text_but_the_utterances_flow_on(model: str, compute_type: str) -> None:
    asr = whisper(model, compute_type)
    silence = np.zeros(16000, np.float32)
    hiss = np.random.default_rng(0).normal(0, 0.03, 32000).astype(np.float32)
    items = [
        Utterance("s", f"s-{i}", 0.0, a.size / 16000, a.size / 16000, a, 0.0) for i, a in enumerate((silence, hiss))
    ]
    out = [t async for t in TranscribeStage(asr).run(feed(items))]
    assert [o.utterance.utterance_id for o in out] == ["s-0", "s-1"]
    for o in out:
        assert o.error is None and o.transcript is not None
        assert o.transcript.text == "" and o.transcript.dropped is not None, o.transcript


@pytest.mark.slow
def test_an_utterance_over_30_s_takes_the_padded_path(tiny_en: WhisperTranscriber) -> None:
    first, second = ASR_SENTENCES[:2], ASR_SENTENCES[2:4]
    # The second pair starts after 31 s, inside faster-whisper's second 30 s window (none straddles it).
    lead_s, gap_s = 0.3, 1.0
    spoken_s = sum(synthesize(text).size for text in first) / 16000 + gap_s
    lines = [(first[0], gap_s), (first[1], 31.0 - lead_s - spoken_s), (second[0], gap_s), second[1]]
    talk = make_dialogue(lines, lead_s=lead_s, tail_s=0.5)
    assert talk.audio.size > 30 * 16000 and talk.spans[2][0] > 30.5 * 16000
    before = tiny_en.paths.copy()
    got = tiny_en.transcribe(talk.audio)
    assert tiny_en.paths - before == {"padded": 1}
    assert word_error_rate(" ".join(talk.texts), got.text) < 0.2, got.text


@dataclass
class _Looping:
    sequences_ids: list[list[int]]
    scores: list[float]
    no_speech_prob: float = 0.01


class _LoopingDecoder:
    """CTranslate2's Whisper whose ``generate`` gets stuck on one token, as base does with no padding."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def generate(self, encoded: Any, prompts: list[list[int]], *, max_length: int, **kw: Any) -> list[_Looping]:
        return [_Looping([[645] * (max_length - len(prompts[0]) - 1)], [-0.05])]


class _LoopingModel:
    def __init__(self, real: Any) -> None:
        self._real = real
        self.model = _LoopingDecoder(real.model)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class _DoubtfulDecoder(_LoopingDecoder):
    """A decode of a few words Whisper is unsure of (average log-prob -2)."""

    def generate(self, encoded: Any, prompts: list[list[int]], *, max_length: int, **kw: Any) -> list[_Looping]:
        return [_Looping([[40, 760, 3]], [-2.0])]


@pytest.mark.slow
@pytest.mark.parametrize(("decoder", "why"), [(_LoopingDecoder, "loop"), (_DoubtfulDecoder, "unsure")])
def test_a_quick_reading_keeps_the_trimmed_decode_whisper_doubts_and_says_so(
    tiny_en: WhisperTranscriber, decoder: type, why: str
) -> None:
    model = _LoopingModel(tiny_en._model)
    model.model = decoder(tiny_en._model.model)
    asr = WhisperTranscriber(model, ASRConfig(model="tiny.en"), english_only=True)
    audio = synthesize(ASR_SENTENCES[0])
    quick = asr.transcribe(audio, redo=False)
    assert asr.paths == {f"{why}_kept": 1}  # no padded pass
    assert quick.doubted and quick.raw_text
    assert (quick.dropped == "repetition") if why == "loop" else (quick.text == quick.raw_text)
    full = asr.transcribe(audio)
    assert asr.paths == {f"{why}_kept": 1, f"{why}_redone": 1, "padded": 1}
    assert not full.doubted and full.dropped is None


@pytest.mark.slow
def test_a_trimmed_decode_that_loops_is_redone_on_the_padded_path(tiny_en: WhisperTranscriber) -> None:
    asr = WhisperTranscriber(_LoopingModel(tiny_en._model), ASRConfig(model="tiny.en"), english_only=True)
    got = [asr.transcribe(synthesize(text)) for text in ASR_SENTENCES]
    assert asr.paths == {"loop_redone": len(ASR_SENTENCES), "padded": len(ASR_SENTENCES)}
    assert all(g.dropped is None for g in got), got
    # tiny.en on the 30 s window: joint WER 0.10-0.12 here under int8 and float32.
    assert word_error_rate(" ".join(ASR_SENTENCES), " ".join(g.text for g in got)) < 0.25, got


@pytest.mark.slow
def test_one_encoder_pass_gives_the_training_paths_features_exactly(base: WhisperTranscriber) -> None:
    """The transcriber's own int8 encoder output, pooled, is what the trainer computes for the same audio
    (training.asr_features.AsrEncoder): same encoder input (utterance + pad_s of silence), same weights."""
    from training.asr_features import AsrEncoder, pool_utterance

    audio = synthesize(ASR_SENTENCES[0])
    base.feature_hook = pool_utterance
    try:
        got = base.transcribe(audio)
    finally:
        base.feature_hook = None
    assert got.features is not None and got.features.shape == (2 * 512 + 10,)
    trainer = AsrEncoder("base", pad_s=base.pad_s, model=base.model)
    np.testing.assert_allclose(got.features, trainer.features(audio), rtol=1e-5, atol=1e-5)
    assert base.transcribe(audio).features is None  # no hook: nothing computed
