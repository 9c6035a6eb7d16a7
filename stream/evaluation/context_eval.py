"""``emostream evaluate``'s context ablation: the same lines classified with and without past context.

A replay runs Whisper once; its events hold every utterance's transcript in stream order. Those
transcripts (and, for the text oracle, the truth lines) are classified again here, text only, one
after another exactly as the stream's classifier stage would: once reading nothing but the line, once
reading the past window (:class:`stream.stages.context.ContextWindows`, the same bounds as
``[classifier]``). Speakers are unknown, as in a stream without a speaker stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stream.evaluation.scoring import Utterance, align, emotion_scores
from stream.stages.context import ContextRow, ContextWindows

__all__ = ["classify_in_order", "context_ablation"]


def classify_in_order(predictor: Any, utts: Sequence[Utterance], *, context: bool, max_utterances: int,
                      window_s: float) -> list[str | None]:  # fmt: skip
    """Each utterance's label from its text (``None`` without text), reading past context or not."""
    windows = ContextWindows(max_utterances if context else 0, window_s)
    out: list[str | None] = []
    for k, u in enumerate(utts):
        text = (u.text or "").strip()
        row = ContextRow("eval", u.uid or str(k), u.start_s, u.end_s, None, bool(text), text)
        if not text:
            out.append(None)
            continue
        plan = windows.plan([row])
        kwargs: dict[str, Any] = {"speakers": [None]}
        if context and bool(getattr(predictor, "uses_context", False)):
            kwargs["past"] = plan.past
        if context and int(getattr(predictor, "past_lines", 0) or 0):
            kwargs["past_lines"] = plan.lines
        (pred,) = predictor.predict([text], [None], **kwargs)
        windows.record(row, None, getattr(pred, "text_embedding", None))
        out.append(pred.label)
    return out


def context_ablation(predictor: Any, pred: Sequence[Utterance], truth: Sequence[Utterance], *,
                     max_utterances: int, window_s: float, min_overlap: float) -> dict[str, Any]:  # fmt: skip
    """Weighted-F1 etc. without and with past context, on the pipeline's transcripts (matched,
    labelled utterances) and on the truth lines (the text oracle)."""
    matches = align(pred, truth, min_overlap=min_overlap)
    out: dict[str, Any] = {"context_utterances": max_utterances, "context_window_s": window_s,
                           "speakers": "unknown (no speaker stage)"}  # fmt: skip
    for name, context in (("off", False), ("past", True)):
        labels = classify_in_order(predictor, pred, context=context, max_utterances=max_utterances,
                                   window_s=window_s)  # fmt: skip
        scored = [m for m in matches if truth[m.truth].emotion and labels[m.pred]]
        oracle = classify_in_order(predictor, truth, context=context, max_utterances=max_utterances,
                                   window_s=window_s)  # fmt: skip
        known = [k for k, u in enumerate(truth) if u.emotion and oracle[k]]
        out[name] = {
            "pipeline_text": emotion_scores(
                [truth[m.truth].emotion or "" for m in scored], [labels[m.pred] or "" for m in scored]
            ).to_dict(),  # fmt: skip
            "text_oracle": emotion_scores(
                [truth[k].emotion or "" for k in known], [oracle[k] or "" for k in known]
            ).to_dict(),  # fmt: skip
        }
    return out
