"""``emostream evaluate``'s context ablation with a scripted predictor that needs the previous line."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream.evaluation.context_eval import classify_in_order, context_ablation
from stream.evaluation.scoring import Utterance

WORDS = {"furious": "anger", "delighted": "joy"}


@dataclass(frozen=True)
class _Pred:
    label: str
    text_embedding: np.ndarray


class EchoPredictor:
    """A keyword line gets its keyword's emotion; "wow really" repeats the emotion of the line it follows
    (known only through the past window), else it is neutral."""

    uses_context = True
    speaker_tags = False

    def __init__(self) -> None:
        self.past_lengths: list[int] = []

    def predict(self, texts: Sequence[str | None], audio: Sequence[Any], *, speakers: Any = None,
                past: Sequence[Sequence[tuple[Any, int]]] | None = None) -> list[_Pred]:  # fmt: skip
        (text,) = texts
        assert text is not None
        label = next((lab for w, lab in WORDS.items() if w in text), "neutral")
        code = list(WORDS.values()).index(label) + 1 if label != "neutral" else 0
        window = list(past[0]) if past is not None else []
        self.past_lengths.append(len(window))
        if text == "wow really" and window:
            prev = int(np.asarray(window[-1][0])[0])
            label = list(WORDS.values())[prev - 1] if prev else "neutral"
        return [_Pred(label, np.array([code], np.float32))]


def _talk() -> list[Utterance]:
    lines = [("i am furious", "anger"), ("wow really", "anger"), ("i am delighted", "joy"), ("wow really", "joy")]
    return [Utterance(k * 3.0, k * 3.0 + 2.0, t, e, f"u{k}") for k, (t, e) in enumerate(lines)]


def test_classify_in_order_reads_only_earlier_lines_within_the_bounds() -> None:
    p = EchoPredictor()
    talk = _talk()
    assert classify_in_order(p, talk, context=True, max_utterances=1, window_s=60.0) == ["anger"] * 2 + ["joy"] * 2
    assert p.past_lengths == [0, 1, 1, 1]
    assert classify_in_order(p, talk, context=False, max_utterances=1, window_s=60.0) == [
        "anger", "neutral", "joy", "neutral"]  # fmt: skip
    assert p.past_lengths[4:] == [0, 0, 0, 0]


def test_context_ablation_scores_both_modes_on_pipeline_text_and_truth() -> None:
    truth = _talk()
    pred = [Utterance(u.start_s + 0.1, u.end_s + 0.1, u.text, "neutral", f"p{k}") for k, u in enumerate(truth)]
    report = context_ablation(EchoPredictor(), pred, truth, max_utterances=2, window_s=60.0, min_overlap=0.5)
    assert report["past"]["pipeline_text"]["accuracy"] == 1.0
    assert report["off"]["pipeline_text"]["accuracy"] == 0.5
    assert report["past"]["text_oracle"]["n"] == 4 and report["off"]["text_oracle"]["accuracy"] == 0.5
