"""The classifier's past context: bounded windows per stream, never the future, cached encodings."""

from __future__ import annotations

import numpy as np

from stream.stages.context import ContextRow, ContextWindows
from training.context import RELATION_OTHER, RELATION_SAME, RELATION_UNKNOWN


def row(stream: str, i: int, *, start: float | None = None, speaker: str | None = None, text: bool = True,
        ) -> ContextRow:  # fmt: skip
    s = float(i * 2) if start is None else start
    return ContextRow(stream, f"{stream}-{i}", s, s + 1.5, speaker, text)


def classify(windows: ContextWindows, rows: list[ContextRow]) -> list[tuple[str, ...]]:
    """Plan a batch, then record each row with a distinct embedding (as the stage does)."""
    plan = windows.plan(rows)
    for k, r in enumerate(rows):
        windows.record(r, plan.tags[k], np.full(4, float(len(r.utterance_id) + k), np.float32))
    return plan.ids


def test_window_is_bounded_by_count_and_by_seconds() -> None:
    w = ContextWindows(max_utterances=3, window_s=5.0)
    for i in range(6):
        classify(w, [row("a", i)])
    (ids,) = w.plan([row("a", 6)]).ids  # starts at 12 s; lines 3..5 end at 7.5, 9.5, 11.5
    assert ids == ("a-3", "a-4", "a-5")
    (ids,) = w.plan([row("a", 7, start=17.0)]).ids  # 5 s back: only a-5 (ends 11.5 < 12) is out too
    assert ids == ()
    (ids,) = w.plan([row("a", 8, start=16.0)]).ids
    assert ids == ("a-5",)


def test_each_stream_has_its_own_past_and_reset_forgets_it() -> None:
    w = ContextWindows(max_utterances=8, window_s=100.0)
    classify(w, [row("a", 0), row("b", 0)])
    plan = w.plan([row("a", 1), row("b", 1)])
    assert plan.ids == [("a-0",), ("b-0",)]
    w.reset("a")
    assert w.plan([row("a", 2)]).ids == [()]
    assert w.plan([row("b", 2)]).ids == [("b-0",)]


def test_never_the_future_and_batch_mates_are_referenced_by_earlier_row_only() -> None:
    w = ContextWindows(max_utterances=8, window_s=100.0)
    classify(w, [row("a", 0)])
    # A line that started later than the current one is never in its window, even if classified first.
    classify(w, [row("a", 5)])
    (ids,) = w.plan([row("a", 3)]).ids
    assert ids == ("a-0",)
    # In one batch, a row may read earlier rows of its own stream (by index), never later ones.
    w2 = ContextWindows(max_utterances=8, window_s=100.0)
    plan = w2.plan([row("a", 0), row("b", 0), row("a", 1), row("a", 2, text=False), row("a", 3)])
    assert plan.past[0] == [] and plan.past[1] == []
    assert [p[0] for p in plan.past[2]] == [0]
    assert [p[0] for p in plan.past[4]] == [0, 2]  # the row without text is no context
    assert all(isinstance(p[0], int) and p[0] < i for i, ps in enumerate(plan.past) for p in ps)


def test_cached_encodings_are_reused_not_recomputed() -> None:
    w = ContextWindows(max_utterances=2, window_s=100.0)
    first = w.plan([row("a", 0)])
    emb = np.arange(4, dtype=np.float32)
    w.record(row("a", 0), first.tags[0], emb)
    w.record(row("a", 1, text=False), None, np.ones(4, np.float32))  # no text: not cached
    w.record(row("a", 2), None, None)  # no encoding (a checkpoint without one): not cached
    (past,) = w.plan([row("a", 3)]).past
    assert len(past) == 1 and past[0][0] is emb
    assert len(w.stream("a")) == 1


def test_speakers_are_numbered_per_stream_and_relations_follow() -> None:
    w = ContextWindows(max_utterances=8, window_s=100.0)
    plan = w.plan([row("a", 0, speaker="spk_7"), row("a", 1, speaker="spk_2"), row("a", 2, speaker="spk_7"),
                   row("a", 3), row("b", 0, speaker="spk_2")])  # fmt: skip
    assert plan.tags == ["S1", "S2", "S1", None, "S1"]
    assert [r for _, r in plan.past[2]] == [RELATION_SAME, RELATION_OTHER]
    assert [r for _, r in plan.past[3]] == [RELATION_UNKNOWN] * 3


def test_zero_utterances_means_no_context() -> None:
    w = ContextWindows(max_utterances=0, window_s=100.0)
    classify(w, [row("a", 0)])
    assert w.plan([row("a", 1)]).ids == [()]


def test_plans_carry_each_past_lines_words_and_tag_item_for_item() -> None:
    w = ContextWindows(max_utterances=2, window_s=100.0)
    first = ContextRow("a", "a-0", 0.0, 1.0, "ross", True, "we were on a break")
    plan = w.plan([first])
    w.record(first, plan.tags[0], np.zeros(4, np.float32))
    rows = [ContextRow("a", "a-1", 2.0, 3.0, "rachel", True, "no we were not"),
            ContextRow("a", "a-2", 4.0, 5.0, None, True, "okay")]  # fmt: skip
    plan = w.plan(rows)
    assert plan.lines[0] == [("S1", "we were on a break")]  # cached: its words were kept with it
    assert plan.lines[1] == [("S1", "we were on a break"), ("S2", "no we were not")]  # a batch-mate too
    assert [len(x) for x in plan.lines] == [len(x) for x in plan.past]
