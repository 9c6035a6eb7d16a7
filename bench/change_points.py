"""Lines found with in-segment speaker change points, without Whisper: segmentation alone, fast.

Each recording goes through the service's own VAD and segmenter (the configured ``[vad]``, defaults
otherwise), then each segment is cut at :func:`stream.stages.change_points.change_points` for every
``--score`` threshold; the cut segments are aligned with the truth CSV exactly as ``emostream evaluate``
aligns utterances. Per recording and threshold: lines found (recall), precision, utterances. Threshold 0
is the segmenter alone. On a recording of one voice per line (the spoken test set) every cut is a loss.

Usage: ``python -m bench.change_points [--pair WAV CSV ...] [--score 0,1.5,2,2.5,3]``; with no ``--pair``,
the episodes (``bench.make_episode``), the test set (``bench.make_testset``) and the dev dialogues
(``bench.make_dialogue``) found under ``bench/results/``. Writes ``bench/results/change_points.json``.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import RESULTS, markdown_table, setup_logging, write_result

logger = logging.getLogger(__name__)


def default_pairs() -> list[tuple[Path, Path]]:
    """Recordings with their truth already built under ``bench/results``."""
    found = [(w, w.with_suffix(".csv")) for w in sorted((RESULTS / "episodes").glob("*.wav"))]
    found += [(d / "testset.wav", d / "truth.csv") for d in sorted(RESULTS.glob("testset-*"))]
    found += [(w, w.with_suffix(".csv")) for w in sorted((RESULTS / "dialogues" / "dev").glob("*.wav"))[:2]]
    return [(w, c) for w, c in found if w.is_file() and c.is_file()]


def segments(audio: np.ndarray) -> list[Any]:
    """The service's segmentation of ``audio`` (float32, 16 kHz): its finished ``UtteranceEnd`` records."""
    from stream.config import load_config
    from stream.sources import to_int16
    from stream.stages.segment import segmenter_params
    from stream.stages.segmenter import Framer, Segmenter, UtteranceEnd
    from stream.stages.vad import make_vad

    cfg = load_config(None).vad
    vad = make_vad(cfg)
    seg, framer = Segmenter(segmenter_params(cfg, vad.frame_samples)), Framer(vad.frame_samples)
    pcm, out = to_int16(audio), []
    for start in range(0, pcm.size, 1600):
        for at, frame in framer.push(pcm[start : start + 1600], start)[1]:
            out += [o for o in seg.push(at, frame, vad.is_speech(frame)) if isinstance(o, UtteranceEnd)]
    return out + [o for o in seg.flush() if isinstance(o, UtteranceEnd)]


def score_pair(wav: Path, csv_path: Path, thresholds: Sequence[float]) -> list[dict[str, Any]]:
    from stream.evaluation import Utterance, align, load_truth
    from stream.stages.change_points import gap_scores, select
    from training.audio import load_audio

    truth = load_truth([csv_path])
    t0 = time.perf_counter()
    segs = [(u, gap_scores(u.pcm.astype(np.float32) / 32768.0)) for u in segments(load_audio(wav))]
    spent = time.perf_counter() - t0
    rows = []
    for threshold in thresholds:
        preds = []
        for u, scores in segs:
            cuts = select(scores, threshold) if threshold > 0 else []
            bounds = [0, *cuts, u.pcm.size]
            preds += [Utterance((u.start_sample + a) / 16000, (u.start_sample + b) / 16000, "", None)
                      for a, b in zip(bounds, bounds[1:], strict=False)]  # fmt: skip
        found = len(align(preds, truth))
        rows.append({"recording": wav.stem, "score": threshold, "lines": len(truth), "utterances": len(preds),
                     "recall": round(found / len(truth), 3), "precision": round(found / max(1, len(preds)), 3),
                     "segmenting_s": round(spent, 2)})  # fmt: skip
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.change_points", description=(__doc__ or "").split("\n")[0])
    p.add_argument("--pair", nargs=2, action="append", type=Path, metavar=("WAV", "CSV"), help="repeatable")
    p.add_argument("--score", default="0,1.5,2,2.5,3", help="thresholds (0 = no cut)")
    p.add_argument("--out", default="change_points")
    args = p.parse_args(argv)
    setup_logging()
    pairs = [tuple(x) for x in args.pair] if args.pair else default_pairs()
    if not pairs:
        p.error("no recordings: pass --pair WAV CSV or build them (bench.make_episode, bench.make_testset)")
    thresholds = [float(x) for x in args.score.split(",")]
    rows = [row for wav, csv_path in pairs for row in score_pair(Path(wav), Path(csv_path), thresholds)]
    table = markdown_table(rows)
    print(table)
    print(f"written {write_result(args.out, {'thresholds': thresholds, 'results': rows, 'table': table})}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
