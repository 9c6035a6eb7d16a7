"""The composed pipeline with real sources, VAD and segmenter and scripted models."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from stream.config import ClassifierConfig, Config, ServerConfig, VADConfig
from stream.events.bus import EventBus
from stream.pipeline import Pipeline
from stream.protocol import LABELS, SERVICE_STREAM, Event
from stream.records import AudioChunk, SourceItem, SourceProblem, SpeechBegan, Utterance
from stream.sources import ReplaySource, to_int16
from stream.stages.segment import SegmentStage, segmenter_params
from stream.stages.vad import WebRtcVad
from tests.helpers import ScriptedPredictor, ScriptedTranscriber, make_dialogue, write_wav

LINES_A = ["Hello there, how are you today?", "I am so angry with you right now.", "Let's talk about it later."]
LINES_B = ["What a wonderful surprise!", "I feel a little sad this evening."]


def build(sources: list[ReplaySource], events: list[Event], **kw: object) -> Pipeline:
    """A pipeline of scripted models; ``max_batch``, ``batch_wait_ms``, ``stats_interval_s`` set the config."""
    classifier = {k: kw.pop(k) for k in ("max_batch", "batch_wait_ms") if k in kw}
    server = {k: kw.pop(k) for k in ("stats_interval_s",) if k in kw}
    config = Config(classifier=ClassifierConfig(**classifier), server=ServerConfig(**server))  # type: ignore[arg-type]
    return Pipeline(
        sources,
        EventBus([events.append]),
        transcriber=kw.pop("transcriber", ScriptedTranscriber(default="words here")),  # type: ignore[arg-type]
        predictor=kw.pop("predictor", ScriptedPredictor(keywords={"angry": "anger"})),  # type: ignore[arg-type]
        config=config,
        **kw,  # type: ignore[arg-type]
    )


def by(events: list[Event], kind: str, stream: str | None = None) -> list[Event]:
    return [e for e in events if e.type == kind and (stream is None or e.stream == stream)]


async def test_two_streams_every_sentence_once_with_well_formed_events_and_end_last(tmp_path: Path) -> None:
    a = make_dialogue(LINES_A, gap_s=1.2)
    b = make_dialogue(LINES_B, gap_s=1.0, lead_s=0.8)
    sources = [
        ReplaySource("a", write_wav(tmp_path / "a.wav", a.audio), fast=True),
        ReplaySource("b", write_wav(tmp_path / "b.wav", b.audio), fast=True),
    ]
    events: list[Event] = []
    await build(sources, events, batch_wait_ms=20).run()

    assert [e.seq for e in events] == list(range(len(events)))
    for stream, talk in (("a", a), ("b", b)):
        starts = [e for e in by(events, "speech", stream) if e.data["state"] == "start"]
        ends = [e for e in by(events, "speech", stream) if e.data["state"] == "end"]
        emotions = by(events, "emotion", stream)
        assert len(starts) == len(ends) == len(by(events, "transcript", stream)) == len(emotions) == len(talk.texts)
        for emo, (s0, s1) in zip(emotions, talk.spans_s(), strict=True):
            d = emo.data
            assert set(d) >= {"utterance_id", "start_s", "end_s", "text", "label", "scores", "modalities", "latency_ms"}
            assert d["label"] in LABELS and set(d["scores"]) == set(LABELS)
            assert sum(d["scores"].values()) == pytest.approx(1.0, abs=1e-4)
            assert d["modalities"] == ["text", "audio"] and d["latency_ms"] >= 0
            # Inside the sentence's span, give or take the configured padding.
            assert s0 - 0.35 <= d["start_s"] <= s0 + 0.1 and s1 - 0.1 <= d["end_s"] <= s1 + 0.55
        ids = [e.data["utterance_id"] for e in emotions]
        assert ids == [e.data["utterance_id"] for e in starts] and len(set(ids)) == len(ids)
        (end,) = by(events, "end", stream)
        assert end.data["reason"] == "eof" and end.data["audio_s"] == pytest.approx(talk.audio.size / 16000, abs=0.01)
        assert all(e.seq < end.seq for e in events if e.stream == stream and e is not end)
    assert by(events, "stats")[-1].stream == SERVICE_STREAM


async def test_anger_keyword_reaches_the_label(tmp_path: Path) -> None:
    talk = make_dialogue(LINES_A[:2])
    events: list[Event] = []
    asr = ScriptedTranscriber(["hello there", "I am so angry"])
    src = ReplaySource("a", write_wav(tmp_path / "a.wav", talk.audio), fast=True)
    await build([src], events, transcriber=asr).run()
    assert [e.data["label"] for e in by(events, "emotion")] == ["neutral", "anger"]
    assert [e.data["text"] for e in by(events, "emotion")] == ["hello there", "I am so angry"]


async def test_stage_failures_become_error_events_and_audio_is_still_classified(tmp_path: Path) -> None:
    talk = make_dialogue(LINES_A)
    events: list[Event] = []
    asr = ScriptedTranscriber(["fine", None, "explode now"])
    pred = ScriptedPredictor(fail_on="explode")
    src = ReplaySource("a", write_wav(tmp_path / "a.wav", talk.audio), fast=True)
    await build([src], events, transcriber=asr, predictor=pred, max_batch=1).run()
    errors = by(events, "error")
    assert [e.data["code"] for e in errors] == ["stage_failed", "stage_failed"]
    assert "transcription failed" in errors[0].data["message"] and errors[0].data["utterance_id"] == "a-2"
    assert "classification failed" in errors[1].data["message"]
    emotions = by(events, "emotion")
    assert [e.data["utterance_id"] for e in emotions] == ["a-1", "a-2"]
    assert emotions[1].data["modalities"] == ["audio"]  # no transcript: audio alone
    assert by(events, "end")[0].data["reason"] == "eof"


async def test_a_broken_source_ends_with_an_error_and_the_others_go_on(tmp_path: Path) -> None:
    talk = make_dialogue(LINES_B[:1])
    (tmp_path / "bad.mp3").write_bytes(b"garbage" * 100)
    sources = [
        ReplaySource("bad", tmp_path / "bad.mp3", fast=True),
        ReplaySource("ok", write_wav(tmp_path / "ok.wav", talk.audio), fast=True),
    ]
    events: list[Event] = []
    await build(sources, events).run()
    (err,) = by(events, "error", "bad")
    assert err.data["code"] == "source_failed" and "bad.mp3" in err.data["message"]
    assert by(events, "end", "bad")[0].data["reason"] == "error"
    assert len(by(events, "emotion", "ok")) == 1


async def test_periodic_stats_report_queues_drops_and_real_time_factor(tmp_path: Path) -> None:
    talk = make_dialogue(LINES_B)
    events: list[Event] = []
    src = ReplaySource("a", write_wav(tmp_path / "a.wav", talk.audio), speed=8.0)
    await build([src], events, stats_interval_s=0.1).run()
    stats = by(events, "stats")
    assert len(stats) >= 3
    d = stats[-1].data
    assert set(d["queues"]) == {"utterances", "classifier"}
    assert d["drops"]["mic_audio_s"] == 0 and d["drops"]["sink_errors"] == 0
    assert d["rtf"]["asr"] >= 0 and d["streams"]["a"]["audio_s"] == pytest.approx(talk.audio.size / 16000, abs=0.01)
    assert d["utterances"] == 2


def test_duplicate_stream_ids_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unique"):
        build([ReplaySource("a", tmp_path / "x.wav"), ReplaySource("a", tmp_path / "y.wav")], [])


async def _chunks(items: list[SourceItem]) -> AsyncIterator[SourceItem]:
    for it in items:
        yield it


async def test_segment_stage_closes_an_utterance_at_a_gap_and_times_the_end_of_speech() -> None:
    vad = WebRtcVad(frame_ms=30)
    params = segmenter_params(VADConfig(), vad.frame_samples)
    talk = make_dialogue(["Hello there, my friend."], lead_s=0.3, tail_s=0.0)
    pcm = to_int16(talk.audio)
    cut = talk.spans[0][0] + (talk.spans[0][1] - talk.spans[0][0]) // 2 // 480 * 480  # mid-speech
    chunks: list[SourceItem] = [
        AudioChunk("m", 0, pcm[:cut], arrival=100.0),
        SourceProblem("m", "device_lost", "gone"),
        AudioChunk("m", cut + 16000, np.zeros(16000, np.int16), arrival=107.0),  # 1 s of audio lost, then silence
    ]
    stage = SegmentStage("m", vad, params, speed=1.0)
    out = [o async for o in stage.run(_chunks(chunks))]
    kinds = [type(o).__name__ for o in out]
    assert kinds == ["SpeechBegan", "SourceProblem", "Utterance"]
    utt = next(o for o in out if isinstance(o, Utterance))
    began = next(o for o in out if isinstance(o, SpeechBegan))
    assert utt.utterance_id == began.utterance_id == "m-1"
    assert utt.end_s <= cut / 16000  # nothing from after the gap
    assert utt.audio.dtype == np.float32 and utt.audio.size == round((utt.end_s - utt.start_s) * 16000)
    # The end of speech lies in the chunk that arrived at t=100.0 and ended at `cut`.
    assert utt.speech_end_at == pytest.approx(100.0 - (cut / 16000 - utt.speech_end_s), abs=1e-6)


async def test_dropped_text_still_gets_an_audio_only_emotion(tmp_path: Path) -> None:
    talk = make_dialogue(LINES_B[:1])
    events: list[Event] = []
    src = ReplaySource("a", write_wav(tmp_path / "a.wav", talk.audio), fast=True)
    await build([src], events, transcriber=ScriptedTranscriber([""])).run()
    (tr,) = by(events, "transcript")
    assert tr.data["text"] == "" and tr.data["dropped"] == "empty"
    (emo,) = by(events, "emotion")
    assert emo.data["modalities"] == ["audio"] and emo.data["text"] == ""


async def test_silero_engine_finds_the_same_sentences(tmp_path: Path) -> None:
    talk = make_dialogue(LINES_A, gap_s=1.2)
    cfg = VADConfig(engine="silero")
    events: list[Event] = []
    pipeline = Pipeline(
        [ReplaySource("a", write_wav(tmp_path / "a.wav", talk.audio), fast=True)],
        EventBus([events.append]),
        transcriber=ScriptedTranscriber(),  # type: ignore[arg-type]
        predictor=ScriptedPredictor(),  # type: ignore[arg-type]
        config=Config(vad=cfg),
        extra_stats=lambda: {"hub": {"subscribers": 0}},
    )
    await pipeline.run()
    emotions = by(events, "emotion")
    assert len(emotions) == len(LINES_A)
    for emo, (s0, s1) in zip(emotions, talk.spans_s(), strict=True):
        assert s0 - 0.4 <= emo.data["start_s"] <= s0 + 0.1 and s1 - 0.1 <= emo.data["end_s"] <= s1 + 0.6
    assert by(events, "stats")[-1].data["hub"] == {"subscribers": 0}


async def test_the_transcript_goes_out_before_classification_starts(tmp_path: Path) -> None:
    talk = make_dialogue(LINES_A[:2])
    events: list[Event] = []
    seen_at_predict: list[set[str]] = []

    class Watching(ScriptedPredictor):
        def predict(self, texts, audio):  # type: ignore[no-untyped-def]
            seen_at_predict.append({e.data["text"] for e in events if e.type == "transcript"})
            return super().predict(texts, audio)

    src = ReplaySource("a", write_wav(tmp_path / "a.wav", talk.audio), fast=True)
    await build([src], events, transcriber=ScriptedTranscriber(["first", "second"]), predictor=Watching()).run()
    assert all(seen for seen in seen_at_predict)
    assert "first" in seen_at_predict[0]


class _Timed:
    """Records (start, end) of each call in ``spans``, sleeping ``delay_s`` inside it."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.spans: list[tuple[float, float]] = []
        self._lock = threading.Lock()

    def timed(self) -> object:
        t0 = time.monotonic()
        time.sleep(self.delay_s)
        with self._lock:
            self.spans.append((t0, time.monotonic()))
        return None


class SlowTranscriber(ScriptedTranscriber):
    def __init__(self, delay_s: float) -> None:
        super().__init__(default="I am so angry")
        self.clock = _Timed(delay_s)
        self.paths: Counter[str] = Counter()

    def transcribe(self, audio: np.ndarray, *, redo: bool = True) -> object:
        self.clock.timed()
        self.paths["trimmed"] += 1
        return super().transcribe(audio)


class FeaturePredictor(ScriptedPredictor):
    def __init__(self, delay_s: float) -> None:
        super().__init__(keywords={"angry": "anger"})
        self.clock = _Timed(delay_s)

    def audio_features(self, audio: Sequence[np.ndarray]) -> np.ndarray:
        self.clock.timed()
        return np.ones((len(audio), 4), np.float32)

    def predict_features(self, texts: Sequence[str | None], features: Sequence[np.ndarray | None]) -> Sequence[object]:
        assert all(f is not None and f.shape == (4,) for f in features)
        return self.predict(texts, features)


async def test_audio_features_overlap_whisper_and_events_keep_their_order(tmp_path: Path) -> None:
    talk = make_dialogue(LINES_A)
    events: list[Event] = []
    asr, pred = SlowTranscriber(0.15), FeaturePredictor(0.1)
    src = ReplaySource("a", write_wav(tmp_path / "a.wav", talk.audio), fast=True)
    await build([src], events, transcriber=asr, predictor=pred).run()
    # Each utterance's features ran while Whisper was busy, not after its transcript.
    assert len(pred.clock.spans) == len(asr.clock.spans) == len(LINES_A)
    for (f0, _), (_, a1) in zip(pred.clock.spans, asr.clock.spans, strict=True):
        assert f0 < a1
    for i in range(1, len(LINES_A) + 1):  # per utterance: its transcript, then its emotion
        kinds = [e.type for e in events if e.data.get("utterance_id") == f"a-{i}" and e.type != "speech"]
        assert kinds == ["transcript", "emotion"]
    assert events[-1].type == "end"
    emotions = by(events, "emotion")
    assert all(e.data["modalities"] == ["text", "audio"] and e.data["label"] == "anger" for e in emotions)
    stats = by(events, "stats")[-1].data
    assert stats["asr_paths"] == {"trimmed": len(LINES_A)}
    assert stats["rtf"]["features"] > 0 and stats["drops"]["feature_failures"] == 0


async def test_sources_added_while_running_go_through_the_same_stages(tmp_path: Path) -> None:
    """keep_open: the run outlives its sources, takes new ones, and ends at stop() after their events."""
    import asyncio

    a = make_dialogue(LINES_A[:1])
    b = make_dialogue(LINES_B)
    events: list[Event] = []
    pipeline = build([ReplaySource("a", write_wav(tmp_path / "a.wav", a.audio), fast=True)], events, keep_open=True)
    with pytest.raises(RuntimeError, match="not running"):
        pipeline.add_source(ReplaySource("x", tmp_path / "a.wav", fast=True))
    run = asyncio.create_task(pipeline.run())
    await pipeline.wait_ended(["a"])
    await asyncio.sleep(0.1)
    assert not run.done()  # still open for more
    pipeline.add_source(ReplaySource("b", write_wav(tmp_path / "b.wav", b.audio), fast=True))
    with pytest.raises(ValueError, match="already used"):
        pipeline.add_source(ReplaySource("a", tmp_path / "a.wav", fast=True))
    await asyncio.wait_for(pipeline.wait_ended(["b"]), 30)
    assert len(by(events, "emotion", "b")) == len(LINES_B) and by(events, "end", "b")[0].data["reason"] == "eof"
    assert pipeline.has_stream("b") and {s.stream_id for s in pipeline.sources} == {"a", "b"}
    pipeline.stop()
    await asyncio.wait_for(run, 10)
    assert [e.seq for e in events] == list(range(len(events)))
