"""The evaluation report: segmentation, transcript and emotion scores as JSON, and as markdown."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from stream.evaluation.scoring import (
    Match,
    Utterance,
    WordErrors,
    align,
    boundaries_kept,
    emotion_scores,
    word_errors,
)
from stream.evaluation.speaker_scoring import speaker_scores
from stream.records import LABELS

__all__ = ["build_report", "report_markdown"]


def _stats(values: Sequence[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "mean": None, "median": None, "p95_abs": None, "max_abs": None}
    ordered = sorted(values)
    absolute = sorted(abs(v) for v in values)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    p95 = absolute[min(len(absolute) - 1, math.ceil(0.95 * len(absolute)) - 1)]
    return {
        "n": len(values),
        "mean": sum(values) / len(values),
        "median": median,
        "p95_abs": p95,
        "max_abs": absolute[-1],
    }


def build_report(
    pred: Sequence[Utterance],
    truth: Sequence[Utterance],
    *,
    oracle: Sequence[str] | None = None,
    min_overlap: float = 0.5,
    extra: Mapping[str, Any] | None = None,
    merges: Mapping[str, str] | None = None,
    corrections: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Score ``pred`` against ``truth`` (both in time order). ``oracle``: the classifier's label for
    each truth utterance's own text, in truth order (the text oracle); ``None`` leaves it out."""
    if oracle is not None and len(oracle) != len(truth):
        raise ValueError(f"oracle has {len(oracle)} labels for {len(truth)} truth utterances")
    matches = align(pred, truth, min_overlap=min_overlap)
    scored = [m for m in matches if truth[m.truth].emotion and pred[m.pred].emotion]
    report: dict[str, Any] = {
        "counts": {
            "truth": len(truth),
            "predicted": len(pred),
            "matched": len(matches),
            "unclassified": sum(1 for u in pred if u.emotion is None),  # found, but no emotion event
        },
        "alignment": {"min_overlap": min_overlap, "rule": "overlap >= min_overlap * shorter span, in time order"},
        "detection": _detection(len(matches), len(pred), len(truth)),
        "boundaries": boundaries_kept(pred, truth, min_overlap=min_overlap),
        "wer": _wer_section(pred, truth, matches),
        "emotion": emotion_scores(
            [truth[m.truth].emotion or "" for m in scored], [pred[m.pred].emotion or "" for m in scored]
        ).to_dict(),
        "timing": {
            "start_offset_s": _stats([pred[m.pred].start_s - truth[m.truth].start_s for m in matches]),
            "end_offset_s": _stats([pred[m.pred].end_s - truth[m.truth].end_s for m in matches]),
            "latency_ms": _stats([u.latency_ms for u in pred if u.latency_ms is not None]),
        },
        "matches": [
            {"truth": truth[m.truth].uid, "pred": pred[m.pred].uid, "overlap_s": round(m.overlap_s, 3)} for m in matches
        ],
    }
    by_branch = _branch_scores(pred, truth, scored)
    if by_branch:
        report["emotion_by_branch"] = by_branch
    speakers = speaker_report(pred, truth, matches, merges or {}, corrections or {})
    if speakers is not None:
        report["speakers"] = speakers
    if oracle is not None:
        report["text_oracle"] = _text_oracle(truth, scored, oracle)
    if extra:
        report.update(extra)
    return report


def _detection(matched: int, predicted: int, truth: int) -> dict[str, float]:
    """How many utterances were found: precision, recall and F1 of the matching."""
    precision = matched / predicted if predicted else 0.0
    recall = matched / truth if truth else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
    }


def _wer_section(pred: Sequence[Utterance], truth: Sequence[Utterance], matches: Sequence[Match]) -> dict[str, Any]:
    """WER over the matched pairs, and over the whole transcript (every truth vs every prediction)."""
    matched_wer = sum((word_errors(truth[m.truth].text, pred[m.pred].text) for m in matches), WordErrors())
    overall_wer = word_errors(" ".join(u.text for u in truth), " ".join(u.text for u in pred))
    return {
        "matched": _finite(matched_wer.wer),
        "overall": _finite(overall_wer.wer),
        "matched_counts": _wer_dict(matched_wer),
        "overall_counts": _wer_dict(overall_wer),
    }


def _text_oracle(truth: Sequence[Utterance], scored: Sequence[Match], oracle: Sequence[str]) -> dict[str, Any]:
    """The classifier on each truth utterance's own text: over the scored matches, and over all truth."""
    known = [k for k, u in enumerate(truth) if u.emotion]
    return {
        "matched": emotion_scores(
            [truth[m.truth].emotion or "" for m in scored], [oracle[m.truth] for m in scored]
        ).to_dict(),
        "all_truth": emotion_scores([truth[k].emotion or "" for k in known], [oracle[k] for k in known]).to_dict(),
    }


def _branch_scores(pred: Sequence[Utterance], truth: Sequence[Utterance], scored: Sequence[Match]) -> dict[str, Any]:
    """Text only / audio only / fused emotion scores on the matched utterances where the classifier
    reported both branches' own labels (what each branch contributes); empty when it reported none."""
    rows = [m for m in scored if {k for k, _ in pred[m.pred].branches} >= {"text", "audio"}]
    if not rows:
        return {}
    gold = [truth[m.truth].emotion or "" for m in rows]
    out = {
        f"{name}_only": emotion_scores(gold, [dict(pred[m.pred].branches)[name] for m in rows]).to_dict()
        for name in ("text", "audio")
    }
    out["fused"] = emotion_scores(gold, [pred[m.pred].emotion or "" for m in rows]).to_dict()
    return out


def _resolve(label: str | None, merges: Mapping[str, str]) -> str | None:
    seen: set[str] = set()
    while label is not None and label in merges and label not in seen:
        seen.add(label)
        label = merges[label]
    return label


def speaker_report(
    pred: Sequence[Utterance],
    truth: Sequence[Utterance],
    matches: Sequence[Match],
    merges: Mapping[str, str],
    corrections: Mapping[str, str] | None = None,
) -> dict[str, Any] | None:
    """Speaker scores on matched utterances whose truth names a speaker (``None`` when none does):
    the labels as sent, as the run's ``speaker`` merge events say they should be read, and with its
    ``corrected`` events (utterance_id -> label) applied too."""
    pairs = [m for m in matches if truth[m.truth].speaker]
    if not pairs:
        return None
    fixed = corrections or {}
    people = [truth[m.truth].speaker or "" for m in pairs]
    sent = speaker_scores(people, [pred[m.pred].speaker for m in pairs])
    after = speaker_scores(people, [_resolve(pred[m.pred].speaker, merges) for m in pairs])
    final = [_resolve(fixed.get(pred[m.pred].uid, pred[m.pred].speaker), merges) for m in pairs]
    return {
        "as_sent": sent.to_dict(),
        "after_merges": after.to_dict(),
        "after_corrections": speaker_scores(people, final).to_dict(),
        "merges": len(merges),
        "corrections": len(fixed),
    }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None  # JSON has no inf: "no reference words, some inserted"


def _wer_dict(w: WordErrors) -> dict[str, int]:
    return {
        "substitutions": w.substitutions,
        "deletions": w.deletions,
        "insertions": w.insertions,
        "ref_words": w.ref_words,
    }


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.{digits}f}"
    return str(value)


def report_markdown(report: Mapping[str, Any]) -> str:
    """The report as markdown: a summary table (pipeline vs text oracle) and the confusion matrix."""
    c, det, wer, emo = report["counts"], report["detection"], report["wer"], report["emotion"]
    oracle = report.get("text_oracle", {}).get("matched")
    timing = report["timing"]

    def orc(key: str) -> str:
        return _fmt(oracle[key]) if oracle else "–"

    lines = [
        "| metric | pipeline | text oracle |",
        "|---|---:|---:|",
        f"| utterances (truth / predicted / matched) | {c['truth']} / {c['predicted']} / {c['matched']} | |",
        f"| detection precision | {_fmt(det['precision'])} | |",
        f"| detection recall | {_fmt(det['recall'])} | |",
        *_boundary_rows(report),
        f"| WER, matched utterances | {_fmt(wer['matched'])} | |",
        f"| WER, whole recording | {_fmt(wer['overall'])} | |",
        f"| emotion n (matched, labelled) | {emo['n']} | {oracle['n'] if oracle else '–'} |",
        f"| emotion accuracy | {_fmt(emo['accuracy'])} | {orc('accuracy')} |",
        f"| emotion weighted-F1 | {_fmt(emo['weighted_f1'])} | {orc('weighted_f1')} |",
        f"| emotion macro-F1 | {_fmt(emo['macro_f1'])} | {orc('macro_f1')} |",
        f"| start offset median (s) | {_fmt(timing['start_offset_s']['median'])} | |",
        f"| end offset median (s) | {_fmt(timing['end_offset_s']['median'])} | |",
    ]
    lines += _optional_rows(report)
    lines += _context_table(report)
    lines += ["", "Confusion matrix on matched utterances (rows: truth, columns: prediction)", ""]
    short = [label[:4] for label in LABELS]
    lines.append("| truth \\ pred | " + " | ".join(short) + " |")
    lines.append("|---|" + "---:|" * len(LABELS))
    for label, row in zip(LABELS, emo["confusion"]["matrix"], strict=True):
        lines.append(f"| {label} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def _boundary_rows(report: Mapping[str, Any]) -> list[str]:
    """How many boundaries between truth lines no utterance spans: all, and by speaker change when known."""
    b = report.get("boundaries")
    if not b or not b["all"]["n"]:
        return []

    def kept(kind: str) -> str:
        n, m = b[kind]["n"], b[kind]["merged"]
        return f"{n - m} of {n} ({_fmt(b[kind]['kept'], 2)})" if n else "none"

    rows = [f"| line boundaries kept apart (no utterance holds both lines) | {kept('all')} | |"]
    if b["speaker_changes"]["n"] or b["same_speaker"]["n"]:
        rows.append(f"| ... where the speaker changes / where one speaker goes on | {kept('speaker_changes')} / "
                    f"{kept('same_speaker')} | |")  # fmt: skip
    return rows


def _optional_rows(report: Mapping[str, Any]) -> list[str]:
    """Summary rows for what only some reports have: replay speed, branches, speakers, the whole-truth oracle."""
    lines: list[str] = []
    if "replay" in report:
        rp = report["replay"]
        lines.append(
            f"| replay wall time (s) / audio (s) / RTF | {_fmt(rp.get('wall_s'), 1)} / "
            f"{_fmt(rp.get('audio_s'), 1)} / {_fmt(rp.get('rtf'))} | |"
        )
    branch = report.get("emotion_by_branch")
    if branch:
        n = branch["fused"]["n"]
        for key in ("accuracy", "weighted_f1"):
            lines.append(
                f"| emotion {key.replace('_', '-')} on {n} utterances with both branches: text only / audio only / "
                f"fused | {_fmt(branch['text_only'][key])} / {_fmt(branch['audio_only'][key])} / "
                f"{_fmt(branch['fused'][key])} | |"
            )
    if "speakers" in report:
        spk = report["speakers"]
        sp, after = spk["as_sent"], spk["after_merges"]
        final = spk.get("after_corrections", after)
        lines += [
            f"| speakers (true / labels sent) | {sp['true_speakers']} / {sp['predicted_speakers']} | |",
            f"| speaker error, as sent (after {spk['merges']} merges; and {spk.get('corrections', 0)} corrections) "
            f"| {_fmt(sp['error'])} ({_fmt(after['error'])}; {_fmt(final['error'])}) | |",
            f"| speaker purity / coverage | {_fmt(sp['purity'])} / {_fmt(sp['coverage'])} | |",
        ]
    if "all_truth" in report.get("text_oracle", {}):
        all_t = report["text_oracle"]["all_truth"]
        lines.append(
            f"| text oracle on all {all_t['n']} truth utterances, weighted-F1 | | {_fmt(all_t['weighted_f1'])} |"
        )
    return lines


def _context_table(report: Mapping[str, Any]) -> list[str]:
    """The past-context comparison, when the report has one."""
    lines: list[str] = []
    if "context" in report:
        ctx = report["context"]
        lines += ["", f"Past context (text only, unknown speakers; up to {ctx['context_utterances']} utterances "
                  f"within {ctx['context_window_s']} s), weighted-F1 / macro-F1:", "",
                  "| text read | pipeline transcripts | truth lines (text oracle) |", "|---|---:|---:|"]  # fmt: skip
        for name, title in (("off", "the line alone"), ("past", "the line + its past")):
            p, o = ctx[name]["pipeline_text"], ctx[name]["text_oracle"]
            lines.append(f"| {title} | {_fmt(p['weighted_f1'])} / {_fmt(p['macro_f1'])} (n={p['n']}) | "
                         f"{_fmt(o['weighted_f1'])} / {_fmt(o['macro_f1'])} (n={o['n']}) |")  # fmt: skip
    return lines
