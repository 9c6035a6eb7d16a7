"""Early start: the segmenter's EndPreview, and the stages using work done on a preview only when the
utterance ends with the same audio."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from stream.config import Config, VADConfig
from stream.events.bus import EventBus
from stream.pipeline import Pipeline
from stream.protocol import Event
from stream.records import Transcript, Utterance, same_audio
from stream.sources import ReplaySource
from stream.stages.early import EarlyWork
from stream.stages.segmenter import EndPreview, Segmenter, SegmenterParams, UtteranceEnd
from stream.stages.speaker_clustering import ClusteringParams
from stream.stages.speakers import SpeakerStage
from stream.stages.transcriber import TranscribeStage
from tests.helpers import ScriptedPredictor, feed, make_dialogue, write_wav

F = 160  # 10 ms frames


def _seg(early_ms: int, post_ms: int = 20) -> Segmenter:
    return Segmenter(
        SegmenterParams(
            frame_samples=F,
            pre_roll_ms=30,
            post_roll_ms=post_ms,
            min_speech_ms=50,
            max_utterance_ms=5000,
            end_silence_ms=100,
            early_start_ms=early_ms,
        )
    )


def _feed(seg: Segmenter, pattern: str) -> list[tuple[int, object]]:
    """(frame index, output) for every output of ``pattern`` ("1" speech, "0" silence), then a flush."""
    out: list[tuple[int, object]] = []
    for i, c in enumerate(pattern):
        rng = np.random.default_rng(i)
        out += [(i, o) for o in seg.push(i * F, rng.integers(-99, 99, F).astype(np.int16), c == "1")]
    return out + [(len(pattern), o) for o in seg.flush()]


def test_the_preview_is_the_utterance_that_ends_sample_for_sample() -> None:
    out = _feed(_seg(early_ms=30), "0" * 5 + "1" * 20 + "0" * 20)
    previews = [(i, o.utterance) for i, o in out if isinstance(o, EndPreview)]
    ends = [(i, o) for i, o in out if isinstance(o, UtteranceEnd)]
    assert len(previews) == 1 and len(ends) == 1
    (at, preview), (end_at, end) = previews[0], ends[0]
    assert at == 24 + 3  # 30 ms after the last speech frame, 70 ms before the 100 ms end of silence
    assert end_at == 24 + 10
    assert (preview.start_sample, preview.end_sample, preview.speech_end_sample) == (
        end.start_sample,
        end.end_sample,
        end.speech_end_sample,
    )
    np.testing.assert_array_equal(preview.pcm, end.pcm)


def test_speech_resuming_makes_the_first_preview_moot_and_the_segmentation_is_unchanged() -> None:
    pattern = "1" * 10 + "0" * 5 + "1" * 10 + "0" * 15
    out = _feed(_seg(early_ms=30), pattern)
    previews = [o.utterance for _, o in out if isinstance(o, EndPreview)]
    ends = [o for _, o in out if isinstance(o, UtteranceEnd)]
    assert len(previews) == 2 and len(ends) == 1
    assert previews[0].end_sample < ends[0].end_sample  # the pause that did not end it
    assert previews[1].end_sample == ends[0].end_sample
    off = [o for _, o in _feed(_seg(early_ms=0), pattern)]
    assert not any(isinstance(o, EndPreview) for o in off)
    assert [(e.start_sample, e.end_sample) for e in off if isinstance(e, UtteranceEnd)] == [
        (e.start_sample, e.end_sample) for e in ends
    ]


def test_a_preview_never_comes_before_the_post_roll_has_passed() -> None:
    out = _feed(_seg(early_ms=10, post_ms=50), "1" * 20 + "0" * 20)
    (at,) = [i for i, o in out if isinstance(o, EndPreview)]
    assert at == 19 + 5


def test_an_early_start_at_or_past_the_end_of_silence_gives_no_preview() -> None:
    out = _feed(_seg(early_ms=100), "1" * 20 + "0" * 20)
    assert not any(isinstance(o, EndPreview) for _, o in out)
    assert sum(isinstance(o, UtteranceEnd) for _, o in out) == 1


class LengthTranscriber:
    """Stateless: says how many samples it heard; counts its calls."""

    model_id = "length-asr"
    stateless = True
    paths: dict[str, int] = {}  # noqa: RUF012 - read-only: a fake decodes one way

    def __init__(self, *, fail_sizes: frozenset[int] = frozenset()) -> None:
        self.calls: list[int] = []
        self.fail_sizes = fail_sizes
        self._lock = threading.Lock()

    def transcribe(self, audio: np.ndarray, *, redo: bool = True) -> Transcript:
        with self._lock:
            self.calls.append(audio.size)
        if audio.size in self.fail_sizes:
            raise RuntimeError("length transcriber failure")
        return Transcript(f"{audio.size} samples.", "en", -0.1, 0.01)


def _utt(uid: str, samples: int, start_s: float = 0.0) -> Utterance:
    audio = np.random.default_rng(samples).normal(0, 0.1, samples).astype(np.float32)
    return Utterance("s", uid, start_s, start_s + samples / 16000, start_s + samples / 16000, audio, 0.0)


async def _transcribe(stage: TranscribeStage, utts: list[Utterance]) -> list[str]:
    return [t.transcript.text async for t in stage.run(feed(utts)) if t.transcript is not None]


async def test_the_transcriber_uses_an_early_pass_only_on_the_same_audio() -> None:
    asr = LengthTranscriber()
    with ThreadPoolExecutor(1) as pool:
        stage = TranscribeStage(asr, executor=pool)
        stage.start_early(_utt("s-1", 8000))
        stage.start_early(_utt("s-2", 4000))  # speech resumed after this preview: s-2 ends longer
        texts = await _transcribe(stage, [_utt("s-1", 8000), _utt("s-2", 6000)])
    assert texts == ["8000 samples.", "6000 samples."]
    # s-1 once; s-2's moot preview was cancelled before it ran, or ran unused.
    assert sorted(asr.calls) in ([6000, 8000], [4000, 6000, 8000])
    assert stage.early == {"started": 2, "used": 1, "wasted": 1}


async def test_a_failed_early_pass_is_redone_on_the_utterance() -> None:
    asr = LengthTranscriber(fail_sizes=frozenset({8000}))
    with ThreadPoolExecutor(1) as pool:
        stage = TranscribeStage(asr, executor=pool)
        stage.start_early(_utt("s-1", 8000))
        await asyncio.sleep(0.05)
        asr.fail_sizes = frozenset()
        texts = await _transcribe(stage, [_utt("s-1", 8000)])
    assert texts == ["8000 samples."] and asr.calls == [8000, 8000]
    assert stage.early["wasted"] == 1 and stage.early["used"] == 0


async def test_a_preview_whose_transcript_is_known_starts_no_early_pass() -> None:
    """The end-of-turn check already read this audio (a pending sentence end that silence confirmed)."""
    asr = LengthTranscriber()
    known = dataclasses.replace(_utt("s-1", 8000), transcript=Transcript("Known.", "en", -0.1, 0.01))
    with ThreadPoolExecutor(1) as pool:
        stage = TranscribeStage(asr, executor=pool)
        stage.start_early(known)
        texts = await _transcribe(stage, [known])
    assert texts == ["Known."] and asr.calls == []
    assert stage.early["started"] == 0 and stage.reused == 1


class CountingEmbedder:
    """Stateless: the embedding is the audio's first samples; counts its calls."""

    model_id = "counting"
    stateless = True

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, wav: np.ndarray) -> np.ndarray:
        self.calls += 1
        return np.abs(wav[:16]).astype(np.float32) + 1.0


async def test_the_speaker_stage_embeds_a_preview_once_and_not_a_changed_one() -> None:
    emb = CountingEmbedder()
    stage = SpeakerStage(emb, ClusteringParams())
    first, second = _utt("s-1", 8000), _utt("s-2", 9000, start_s=1.0)
    stage.preview(first)
    stage.preview(_utt("s-2", 7000, start_s=1.0))
    for u in (first, second):
        stage.start(u)
    results = [await stage.result(u) for u in (first, second)]
    assert all(r.speaker for r in results)
    assert emb.calls == 3  # s-1's preview, s-2's moot preview, s-2 itself
    stage.close()


def test_early_work_hands_out_only_work_on_the_same_audio_and_counts_the_rest() -> None:
    work: EarlyWork[Future[int]] = EarlyWork()
    moot, kept, other = Future[int](), Future[int](), Future[int]()
    work.put(_utt("s-1", 4000), moot)
    work.put(_utt("s-1", 8000), kept)  # a newer preview of s-1 replaces the first
    work.put(_utt("s-2", 8000), other)
    assert moot.cancelled() and work.has(_utt("s-1", 8000)) and not work.has(_utt("s-1", 4000))
    assert work.claim(_utt("s-1", 8000)) is kept and not kept.cancelled()
    assert work.claim(_utt("s-1", 8000)) is None  # claimed once
    assert work.claim(_utt("s-2", 9000)) is None and other.cancelled()  # s-2 grew after its preview
    work.put(_utt("s-3", 8000), Future[int]())
    work.clear()
    assert len(work) == 0
    assert work.counts() == {"started": 4, "used": 1, "wasted": 3}
    work.failed()  # the claimed work raised after all
    assert work.counts() == {"started": 4, "used": 0, "wasted": 4}


def test_same_audio_compares_stream_id_and_bounds() -> None:
    a = _utt("s-1", 8000)
    assert same_audio(a, _utt("s-1", 8000))
    assert not same_audio(a, _utt("s-1", 8001))
    assert not same_audio(a, _utt("s-2", 8000))


def _pipeline(wav: Path, asr: LengthTranscriber, early_ms: int, events: list[Event], turn_ms: int = 0) -> Pipeline:
    config = Config(vad=VADConfig(early_start_ms=early_ms, end_of_turn_pause_ms=turn_ms))
    return Pipeline(
        [ReplaySource("a", wav, fast=True)],
        EventBus([events.append]),
        transcriber=asr,  # type: ignore[arg-type]
        predictor=ScriptedPredictor(),  # type: ignore[arg-type]
        config=config,
    )


async def test_the_pipeline_gives_the_same_utterances_with_whisper_started_early(tmp_path: Path) -> None:
    # The first line pauses 0.3 s mid-way (under the 0.5 s end of silence): a preview that speech makes moot.
    talk = make_dialogue([("Is it raining today?", 0.3), ("I think so.", 1.0), "Take an umbrella then."])
    wav = write_wav(tmp_path / "a.wav", talk.audio)
    runs = {}
    for early_ms in (0, 200):
        events: list[Event] = []
        asr = LengthTranscriber()
        pipeline = _pipeline(wav, asr, early_ms, events)
        await pipeline.run()
        texts = [(e.data["start_s"], e.data["end_s"], e.data["text"]) for e in events if e.type == "transcript"]
        runs[early_ms] = (texts, asr.calls, pipeline.stats()["early"])
    (texts_off, calls_off, _), (texts_on, calls_on, early) = runs[0], runs[200]
    assert len(texts_off) == 2 and texts_on == texts_off  # same utterances, same words
    assert len(calls_off) == 2
    assert early["used"] == 2 and early["wasted"] >= 1  # the mid-line pause
    assert len(calls_on) == early["used"] + early["wasted"]


async def test_early_start_leaves_the_end_of_turn_cuts_as_they_are(tmp_path: Path) -> None:
    """With the end-of-turn check on (the fake always reads a finished sentence), the mid-line pause is cut
    once the next pause confirms it, with early start on or off; the pending reading of a line that silence
    then ends is its transcript, so no early pass runs for it."""
    talk = make_dialogue([("Is it raining today?", 0.3), ("I think so.", 1.0), "Take an umbrella then."])
    wav = write_wav(tmp_path / "a.wav", talk.audio)
    runs = {}
    for early_ms in (0, 200):
        events: list[Event] = []
        pipeline = _pipeline(wav, LengthTranscriber(), early_ms, events, turn_ms=100)
        await pipeline.run()
        texts = [(e.data["start_s"], e.data["end_s"], e.data["text"]) for e in events if e.type == "transcript"]
        runs[early_ms] = (texts, pipeline.stats())
    (texts_off, _), (texts_on, stats) = runs[0], runs[200]
    assert len(texts_off) == 3 and texts_on == texts_off
    assert stats["turns"]["ends"] == 1 and stats["early"]["started"] == 0


def test_early_start_is_a_checked_config_key() -> None:
    from stream.config import ConfigError, load_config

    assert VADConfig().early_start_ms == 200
    with pytest.raises(ConfigError, match="vad.early_start_ms"):
        load_config(None, **{"vad.early_start_ms": -1})
