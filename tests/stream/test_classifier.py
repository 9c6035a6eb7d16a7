"""Classifier stage with a scripted predictor: micro-batches across streams, modalities, failures."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Sequence
from typing import Any

import numpy as np
import pytest

from stream.config import ClassifierConfig
from stream.records import Transcribed, Transcript, Utterance
from stream.stages.classifier import ClassifierStage, load_predictor
from tests.helpers import ScriptedPredictor


def item(stream: str, i: int, text: str | None = "hello", dropped: str | None = None) -> Transcribed:
    utt = Utterance(stream, f"{stream}-{i}", float(i), i + 1.0, i + 0.8, np.full(16000, 0.1, np.float32), 0.0)
    if text is None:
        return Transcribed(utt, None, "transcription failed: boom")
    return Transcribed(utt, Transcript(text, "en", -0.2, 0.0, dropped, text))


async def arrive(items: Sequence[Transcribed], gaps_s: Sequence[float] = ()) -> AsyncIterator[Transcribed]:
    for k, it in enumerate(items):
        if k < len(gaps_s) and gaps_s[k]:
            await asyncio.sleep(gaps_s[k])
        yield it


async def test_utterances_ready_together_are_classified_in_one_batch_across_streams() -> None:
    pred = ScriptedPredictor(keywords={"angry": "anger"})
    stage = ClassifierStage(pred, ClassifierConfig(max_batch=8, batch_wait_ms=50))
    items = [item("a", 0, "I am angry"), item("b", 0, "fine"), item("a", 1, "ok")]
    out = [c async for c in stage.run(arrive(items))]
    assert len(pred.calls) == 1 and len(pred.calls[0][0]) == 3
    assert [c.item.utterance.utterance_id for c in out] == ["a-0", "b-0", "a-1"]
    assert [c.prediction.label for c in out if c.prediction] == ["anger", "neutral", "neutral"]
    assert all(c.batch_size == 3 for c in out)
    assert stage.batches == 1 and stage.items == 3


async def test_max_batch_and_the_wait_window_bound_the_batches() -> None:
    pred = ScriptedPredictor()
    stage = ClassifierStage(pred, ClassifierConfig(max_batch=2, batch_wait_ms=20))
    items = [item("a", i) for i in range(5)]
    out = [c async for c in stage.run(arrive(items, gaps_s=[0, 0, 0, 0, 0.2]))]
    assert [len(texts) for texts, _ in pred.calls] == [2, 2, 1]
    assert len(out) == 5


async def test_empty_or_dropped_text_uses_audio_alone() -> None:
    pred = ScriptedPredictor()
    items = [item("a", 0, ""), item("a", 1, "", dropped="no_speech"), item("a", 2, None), item("a", 3, "words")]
    out = [c async for c in ClassifierStage(pred, ClassifierConfig(batch_wait_ms=20)).run(arrive(items))]
    texts, audio = pred.calls[0]
    assert texts == [None, None, None, "words"]
    assert all(a is not None for a in audio)
    assert [c.prediction.modalities for c in out if c.prediction] == [("audio",)] * 3 + [("text", "audio")]


async def test_text_only_checkpoint_never_gets_audio_and_skips_rows_without_text() -> None:
    pred = ScriptedPredictor(uses_audio=False)
    stage = ClassifierStage(pred, ClassifierConfig(batch_wait_ms=20))
    out = [c async for c in stage.run(arrive([item("a", 0, "hi"), item("a", 1, "")]))]
    texts, audio = pred.calls[0]
    assert texts == ["hi"] and audio == [None]
    assert out[0].prediction is not None and out[0].prediction.modalities == ("text",)
    assert out[1].prediction is None and "no usable modality" in (out[1].error or "")
    assert stage.unclassifiable == 1


async def test_a_poisoned_row_fails_alone_and_its_batch_mates_are_retried_one_by_one() -> None:
    pred = ScriptedPredictor(fail_on="explode")
    stage = ClassifierStage(pred, ClassifierConfig(max_batch=3, batch_wait_ms=10))
    items = [item("a", 0, "x"), item("a", 1, "explode"), item("b", 0, "y"), item("a", 2, "fine")]
    out = [c async for c in stage.run(arrive(items, gaps_s=[0, 0, 0, 0.1]))]
    assert [c.item.utterance.utterance_id for c in out] == ["a-0", "a-1", "b-0", "a-2"]
    assert [c.error is not None for c in out] == [False, True, False, False]
    assert "scripted failure" in (out[1].error or "")
    assert [len(texts) for texts, _ in pred.calls] == [3, 1, 1, 1, 1]  # the batch, 3 retries, the next batch


async def test_classification_runs_off_the_event_loop() -> None:
    pred = ScriptedPredictor(delay_s=0.2)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    [_ async for _ in ClassifierStage(pred).run(arrive([item("a", 0)]))]
    task.cancel()
    assert ticks >= 10


async def test_an_input_failure_reaches_the_consumer() -> None:
    async def broken() -> AsyncIterator[Transcribed]:
        yield item("a", 0)
        raise RuntimeError("upstream broke")

    with pytest.raises(RuntimeError, match="upstream broke"):
        [_ async for _ in ClassifierStage(ScriptedPredictor()).run(broken())]


def test_a_missing_checkpoint_names_the_file_and_the_fix(tmp_path: object) -> None:
    with pytest.raises(FileNotFoundError, match="emostream-train"):
        load_predictor("/nonexistent/model.pt")


class FeatureScriptedPredictor(ScriptedPredictor):
    """A scripted predictor that, like ``EmotionPredictor``, takes precomputed audio feature vectors.

    ``audio_features`` fails on audio whose first sample is negative and records the thread it ran in.
    """

    def __init__(self, *, feature_delay_s: float = 0.0, **kw: Any) -> None:
        super().__init__(**kw)
        self.feature_delay_s = feature_delay_s
        self.feature_threads: list[str] = []
        self.feature_calls: list[list[np.ndarray | None]] = []

    def audio_features(self, audio: Sequence[np.ndarray]) -> np.ndarray:
        import threading
        import time

        self.feature_threads.append(threading.current_thread().name)
        time.sleep(self.feature_delay_s)
        if any(a[0] < 0 for a in audio):
            raise RuntimeError("scripted feature failure")
        return np.stack([np.full(4, float(a.mean()), np.float32) for a in audio])

    def predict_features(self, texts: Sequence[str | None], features: Sequence[np.ndarray | None]) -> Sequence[object]:
        self.feature_calls.append(list(features))
        return self.predict(texts, features)


async def test_prefetched_features_run_in_their_own_thread_while_whisper_works() -> None:
    pred = FeatureScriptedPredictor(feature_delay_s=0.15)
    stage = ClassifierStage(pred, ClassifierConfig(batch_wait_ms=5))
    items = [item("a", 0, "one"), item("b", 0, "two")]
    loop = asyncio.get_running_loop()
    released = 0.0

    async def whisper() -> AsyncIterator[Transcribed]:
        nonlocal released
        for it in items:
            stage.prefetch(it.utterance)  # the pipeline calls this when the speech ends
        await asyncio.sleep(0.4)  # "Whisper" takes longer than both feature vectors together
        released = loop.time()
        for it in items:
            yield it

    out = [c async for c in stage.run(whisper())]
    assert loop.time() - released < 0.1  # nothing left to compute but the small networks
    assert [c.prediction.modalities for c in out if c.prediction] == [("text", "audio")] * 2
    assert pred.feature_threads and all(name.startswith("features") for name in pred.feature_threads)
    (features,) = pred.feature_calls
    assert all(f is not None and f.shape == (4,) and f[0] == pytest.approx(0.1) for f in features)
    assert stage.features_busy_s >= 0.3 and stage.features_rtf > 0


async def test_features_not_prefetched_are_computed_when_the_transcript_arrives() -> None:
    pred = FeatureScriptedPredictor()
    stage = ClassifierStage(pred, ClassifierConfig(batch_wait_ms=20))
    out = [c async for c in stage.run(arrive([item("a", 0, ""), item("a", 1)]))]
    assert [c.prediction.modalities for c in out if c.prediction] == [("audio",), ("text", "audio")]
    assert len(pred.feature_threads) == 2


async def test_a_feature_failure_leaves_the_text_and_without_text_is_an_error() -> None:
    def bad(it: Transcribed) -> Transcribed:
        utt = it.utterance
        return Transcribed(
            Utterance(utt.stream, utt.utterance_id, utt.start_s, utt.end_s, utt.speech_end_s, -utt.audio, 0.0),
            it.transcript,
            it.error,
        )

    pred = FeatureScriptedPredictor()
    stage = ClassifierStage(pred, ClassifierConfig(batch_wait_ms=20))
    items = [bad(item("a", 0, "hi")), bad(item("a", 1, "")), item("a", 2, "fine")]
    out = [c async for c in stage.run(arrive(items))]
    assert [c.item.utterance.utterance_id for c in out] == ["a-0", "a-1", "a-2"]
    assert out[0].prediction is not None and out[0].prediction.modalities == ("text",)
    assert out[1].prediction is None and "audio features failed: RuntimeError" in (out[1].error or "")
    assert out[2].prediction is not None and out[2].prediction.modalities == ("text", "audio")
    assert stage.feature_failures == 2 and stage.unclassifiable == 0


async def test_a_text_only_checkpoint_never_computes_features() -> None:
    pred = FeatureScriptedPredictor(uses_audio=False)
    stage = ClassifierStage(pred, ClassifierConfig(batch_wait_ms=5))
    it = item("a", 0, "hi")
    stage.prefetch(it.utterance)
    out = [c async for c in stage.run(arrive([it]))]
    assert out[0].prediction is not None and out[0].prediction.modalities == ("text",)
    assert pred.feature_threads == [] and pred.feature_calls == []


class StreamKeyPredictor(FeatureScriptedPredictor):
    """Normalises per stream like ``EmotionPredictor``: takes ``streams=`` (and ``audio_speakers=``) and
    can forget a stream."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.streams: list[list[str | None]] = []
        self.audio_speakers: list[list[str | None] | None] = []
        self.resets: list[str | None] = []

    def predict_features(
        self,
        texts: Sequence[str | None],
        features: Sequence[np.ndarray | None],
        *,
        streams: Sequence[str | None] | None = None,
        audio_speakers: Sequence[str | None] | None = None,
    ) -> Sequence[object]:
        self.streams.append(list(streams or []))
        self.audio_speakers.append(None if audio_speakers is None else list(audio_speakers))
        return super().predict_features(texts, features)

    def reset_stream(self, stream: str | None = None) -> None:
        self.resets.append(stream)


async def test_features_from_whisper_encoder_pass_are_used_and_nothing_else_is_encoded() -> None:
    """One encoder pass: a transcript that carries the features is classified with them; the stage
    neither prefetches nor computes any; a transcript without them (e.g. a > 30 s utterance) still gets
    its own features; each row goes with its stream for the running normalisation."""
    pred = StreamKeyPredictor()
    stage = ClassifierStage(pred, ClassifierConfig(batch_wait_ms=20))
    stage.features_from_asr = True
    carried = np.arange(4, dtype=np.float32)

    def with_features(it: Transcribed) -> Transcribed:
        assert it.transcript is not None
        return Transcribed(it.utterance, dataclasses.replace(it.transcript, features=carried), it.error)

    items = [with_features(item("a", 0, "one")), with_features(item("b", 0, "")), item("a", 1, "three")]
    for it in items:
        stage.prefetch(it.utterance)  # the pipeline's call at speech end: a no-op here
    out = [c async for c in stage.run(arrive(items))]
    assert [c.prediction.modalities for c in out if c.prediction] == [("text", "audio"), ("audio",), ("text", "audio")]
    (features,) = pred.feature_calls
    np.testing.assert_array_equal(features[0], carried)
    np.testing.assert_array_equal(features[1], carried)
    assert features[2] is not None and features[2][0] == pytest.approx(0.1)  # computed: none was carried
    assert len(pred.feature_threads) == 1
    assert pred.streams == [["a", "b", "a"]]
    assert pred.audio_speakers == [None]  # audio_norm = "stream" (the default): per stream only
    stage.end_stream("a")
    assert pred.resets == ["a"]


@pytest.mark.parametrize(
    ("audio_norm", "streams", "speakers"),
    [("speaker", ["a", "a", "b"], ["S1", "S2", None]), ("stream", ["a", "a", "b"], None), ("off", [], None)],
)
async def test_audio_norm_gives_the_predictor_each_rows_stream_and_speaker_label(
    audio_norm: str, streams: list[str], speakers: list[str | None] | None
) -> None:
    """``[classifier] audio_norm``: per speaker label (unlabelled rows: the stream's), per stream, or off."""
    pred = StreamKeyPredictor()
    stage = ClassifierStage(pred, ClassifierConfig(batch_wait_ms=20, audio_norm=audio_norm))
    items = [item("a", 0), item("a", 1), item("b", 0)]
    items = [dataclasses.replace(it, speaker=spk) for it, spk in zip(items, ["S1", "S2", None], strict=True)]
    out = [c async for c in stage.run(arrive(items))]
    assert all(c.prediction is not None for c in out)
    assert pred.streams == [streams]
    assert pred.audio_speakers == [speakers]


class ContextPredictor(ScriptedPredictor):
    """A scripted predictor that reads past context: records the speakers and past it was given, and
    returns each row's "encoding" (its call and row number) for the stage to cache."""

    uses_context = True
    speaker_tags = True

    def __init__(self, **kw: Any) -> None:
        super().__init__(uses_audio=False, **kw)
        self.kwargs: list[dict[str, Any]] = []

    def predict(self, texts: Sequence[str | None], audio: Sequence[np.ndarray | None], **kw: Any) -> list[Any]:
        import dataclasses

        self.kwargs.append(kw)
        base = super().predict(texts, audio)
        call = len(self.calls)
        return [dataclasses.replace(p, text_embedding=np.array([call, k], np.float32)) for k, p in enumerate(base)]


async def test_context_reads_the_streams_cached_past_and_batch_mates_and_says_which() -> None:
    pred = ContextPredictor()
    stage = ClassifierStage(pred, ClassifierConfig(max_batch=8, batch_wait_ms=30, context_utterances=2))
    assert stage.reads_context
    first = [c async for c in stage.run(arrive([item("a", 0, "one")]))]
    assert first[0].context_ids == ()
    out = [c async for c in stage.run(arrive([item("a", 1, "two"), item("b", 0, "x"), item("a", 2, "three")]))]
    assert [c.context_ids for c in out] == [("a-0",), (), ("a-0", "a-1")]
    past = pred.kwargs[1]["past"]
    cached, _ = past[0][0]
    assert np.array_equal(cached, [1, 0])  # a-0's encoding from the first call, not recomputed
    assert [p[0] for p in past[2]][1] == 0  # a-1 is the batch's row 0
    assert pred.kwargs[1]["speakers"] == [None, None, None]  # no speaker stage: unknown
    stage.end_stream("a")
    again = [c async for c in stage.run(arrive([item("a", 3, "four")]))]
    assert again[0].context_ids == ()  # reset when the stream ended


async def test_context_names_no_more_past_utterances_than_the_checkpoints_module_reads() -> None:
    """A module built for 1 past line reads only the latest of a longer window: the event says so."""
    pred = ContextPredictor()
    pred.context_utterances = 1  # type: ignore[attr-defined]
    stage = ClassifierStage(pred, ClassifierConfig(max_batch=1, batch_wait_ms=5, context_utterances=8))
    out = [c async for c in stage.run(arrive([item("a", k, f"line {k}") for k in range(3)]))]
    assert [c.context_ids for c in out] == [(), ("a-0",), ("a-1",)]
    assert [len(kw["past"][0]) for kw in pred.kwargs] == [0, 1, 1]


class PastLinesPredictor(ContextPredictor):
    """A checkpoint that reads its 2 latest past lines inside the encoder's input and has no context module."""

    uses_context = False
    past_lines = 2


async def test_a_checkpoint_reading_past_lines_gets_their_words_and_the_event_names_those_lines() -> None:
    pred = PastLinesPredictor()
    stage = ClassifierStage(pred, ClassifierConfig(max_batch=8, batch_wait_ms=30, context_utterances=8))
    assert not stage.reads_context
    first = [c async for c in stage.run(arrive([item("a", 0, "one"), item("a", 1, "two")]))]
    out = [c async for c in stage.run(arrive([item("a", 2, "three")]))]
    assert [c.context_ids for c in first + out] == [(), ("a-0",), ("a-0", "a-1")]
    assert pred.kwargs[0]["past_lines"] == [[], [(None, "one")]]  # a batch-mate's words, unknown speaker
    assert pred.kwargs[1]["past_lines"] == [[(None, "one"), (None, "two")]]  # cached words
    assert "past" not in pred.kwargs[1]  # no context module: no encodings to read
    more = [c async for c in stage.run(arrive([item("a", 3, "four")]))]
    assert more[0].context_ids == ("a-1", "a-2")  # the latest two: what the checkpoint reads
    off = PastLinesPredictor()
    silent = ClassifierStage(off, ClassifierConfig(batch_wait_ms=10, context=False))
    [c async for c in silent.run(arrive([item("a", 0, "one"), item("a", 1, "two")]))]
    assert all("past_lines" not in kw for kw in off.kwargs)  # context = false: each line alone


async def test_context_turned_off_passes_no_past_and_reports_none() -> None:
    pred = ContextPredictor()
    stage = ClassifierStage(pred, ClassifierConfig(batch_wait_ms=10, context=False))
    assert not stage.reads_context
    out = [c async for c in stage.run(arrive([item("a", 0, "one"), item("a", 1, "two")]))]
    assert all(c.context_ids is None for c in out)
    assert all("past" not in kw for kw in pred.kwargs)


async def test_a_predictor_without_context_support_is_called_as_before() -> None:
    pred = ScriptedPredictor()
    stage = ClassifierStage(pred, ClassifierConfig(batch_wait_ms=10, context=True))
    out = [c async for c in stage.run(arrive([item("a", 0, "one")]))]
    assert not stage.reads_context and out[0].context_ids is None
