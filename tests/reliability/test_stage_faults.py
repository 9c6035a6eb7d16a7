"""Faults inside one stage, at the stage level: one poisoned utterance must not take others with it."""

from __future__ import annotations

import numpy as np

from stream.config import ClassifierConfig
from stream.records import Classified, Transcribed, Transcript, Utterance
from stream.stages.classifier import ClassifierStage
from tests.helpers import FakePredictor, run_stage


def transcribed(i: int, text: str) -> Transcribed:
    utt = Utterance(
        stream="s",
        utterance_id=f"s-{i}",
        start_s=float(i),
        end_s=i + 0.5,
        speech_end_s=i + 0.4,
        audio=np.zeros(8000, dtype=np.float32),
        speech_end_at=0.0,
    )
    return Transcribed(utt, Transcript(text, "en", -0.1, 0.01, None, text))


async def test_one_poisoned_row_does_not_fail_its_batch() -> None:
    stage = ClassifierStage(FakePredictor(fail_texts={"poison"}), ClassifierConfig(max_batch=8, batch_wait_ms=50))
    items = [transcribed(0, "fine"), transcribed(1, "poison"), transcribed(2, "also fine")]
    out: list[Classified] = await run_stage(stage.run, items)
    assert [c.item.utterance.utterance_id for c in out] == ["s-0", "s-1", "s-2"]
    assert out[1].prediction is None and out[1].error
    assert out[0].prediction is not None and out[2].prediction is not None, [c.error for c in out]


async def test_poisoned_batch_reports_and_the_stage_goes_on() -> None:
    stage = ClassifierStage(FakePredictor(fail_texts={"poison"}), ClassifierConfig(max_batch=1, batch_wait_ms=0))
    items = [transcribed(0, "fine"), transcribed(1, "poison"), transcribed(2, "also fine")]
    out = await run_stage(stage.run, items)
    assert [c.prediction is not None for c in out] == [True, False, True]
    assert "injected classifier fault" in (out[1].error or "")
