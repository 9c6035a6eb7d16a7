"""Speaker-stage benchmark: clustering error on real-voice dialogues, embedding cost, memory.

Reads dialogues made by ``bench.make_dialogue`` (``NAME.wav`` + ``NAME.csv`` with a ``speaker``
column), embeds every true turn with the speaker encoder (voiced frames only, as the live stage does),
then replays the embeddings in order through

* the naive rule (nearest centroid above a fixed cosine threshold, else a new speaker) at several
  thresholds, and
* :class:`stream.stages.speaker_clustering.OnlineClusterer` with the ``[speakers]`` config,

and scores the labels *as they were sent* and after the corrections and merges the clusterer reported
(one-to-one mapping, see
:mod:`stream.evaluation.speaker_scoring`). This isolates the speaker stage from segmentation; the
end-to-end figure comes from ``emostream evaluate`` on the same files. Also measured: ms per
utterance of the embedding (warm) and the process RSS added by loading the encoder.

Usage: ``python -m bench.speakers [--split test] [--sweep]`` (``--sweep`` tries clustering settings:
use it on ``dev`` only). Writes ``bench/results/speakers-SPLIT.json``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import REPO, setup_logging, summarize, write_result
from stream.evaluation.speaker_scoring import speaker_scores
from stream.stages.speaker_clustering import ClusteringParams, NaiveClusterer, OnlineClusterer
from training.audio import load_audio

logger = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 16000
NAIVE_THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75)


def _rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


def read_dialogue(csv_path: Path) -> list[dict[str, Any]]:
    with csv_path.open(encoding="utf-8") as fh:
        return [dict(row) for row in csv.DictReader(fh)]


def embed_dialogues(folder: Path, encoder: Any, *, pad_s: float = 0.1) -> dict[str, tuple[list[str], np.ndarray]]:
    """Per dialogue: true speakers and embeddings of its turns (cached beside the files)."""
    out: dict[str, tuple[list[str], np.ndarray]] = {}
    timings: list[float] = []
    for csv_path in sorted(folder.glob("*.csv")):
        rows = read_dialogue(csv_path)
        cache = csv_path.with_suffix(".emb.npy")
        if cache.is_file() and encoder is None:
            out[csv_path.stem] = ([r["speaker"] for r in rows], np.load(cache))
            continue
        audio = load_audio(csv_path.with_suffix(".wav"))
        embs = []
        for r in rows:
            a = int(max(0.0, float(r["start_s"]) - pad_s) * SAMPLE_RATE_HZ)
            b = int((float(r["end_s"]) + pad_s) * SAMPLE_RATE_HZ)
            t0 = time.perf_counter()
            embs.append(encoder.embed(audio[a:b]))
            timings.append(time.perf_counter() - t0)
        matrix = np.stack(embs)
        np.save(cache, matrix)
        out[csv_path.stem] = ([r["speaker"] for r in rows], matrix)
    if timings:
        embed_dialogues.timings = timings  # type: ignore[attr-defined]
    return out


def run_clusterer(make: Any, data: dict[str, tuple[list[str], np.ndarray]]) -> dict[str, Any]:
    """Labels as sent, and after the corrections and merges the clusterer reported, scored per dialogue."""
    errors, final_errors, purity, coverage, merges, found = [], [], [], [], 0, []
    ages: list[int] = []  # utterances between one and its correction
    for truth, embs in data.values():
        clusterer = make()
        sent: list[str] = []
        final: list[str] = []
        for i, e in enumerate(embs):
            online = isinstance(clusterer, OnlineClusterer)
            assignment, merged = clusterer.add(e, str(i)) if online else clusterer.add(e)
            sent.append(assignment.speaker)
            final.append(assignment.speaker)
            for c in assignment.corrections:
                final[int(c.key)] = c.into
            merges += len(merged)
            ages += [i - int(c.key) for c in assignment.corrections]
        resolve = getattr(clusterer, "resolve", lambda label: label)
        s = speaker_scores(truth, sent)
        errors.append(s.error)
        final_errors.append(speaker_scores(truth, [resolve(label) for label in final]).error)
        purity.append(s.purity)
        coverage.append(s.coverage)
        found.append(s.predicted_speakers)
    return {
        "error_mean": float(np.mean(errors)),
        "error_worst": float(np.max(errors)),
        "error_after_corrections_mean": float(np.mean(final_errors)),
        "error_after_corrections_worst": float(np.max(final_errors)),
        "purity_mean": float(np.mean(purity)),
        "coverage_mean": float(np.mean(coverage)),
        "speakers_found_mean": float(np.mean(found)),
        "merges": merges,
        "corrections": len(ages),
        "correction_age_utterances": {"p50": float(np.median(ages)), "p90": float(np.percentile(ages, 90))}
        if ages
        else None,
        "errors": [round(e, 4) for e in errors],
        "errors_after_corrections": [round(e, 4) for e in final_errors],
    }


def sweep(data: dict[str, tuple[list[str], np.ndarray]], base: ClusteringParams) -> list[dict[str, Any]]:
    rows = []
    for threshold in (0.0, 0.05, 0.1, 0.15, 0.2):
        for pca_dims in (0, 4, 8, 12):
            for merge_after in (3, 6):
                p = dataclasses.replace(base, threshold=threshold, pca_dims=pca_dims, merge_after=merge_after)
                r = run_clusterer(lambda p=p: OnlineClusterer(p), data)
                rows.append({"threshold": threshold, "pca_dims": pca_dims, "merge_after": merge_after, **r})
    return sorted(rows, key=lambda r: r["error_mean"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--split", default="test", help="dialogue folder under bench/results/dialogues")
    parser.add_argument("--dir", type=Path, default=None, help="a folder of NAME.wav + NAME.csv dialogues")
    parser.add_argument("--encoder", default="ge2e")
    parser.add_argument("--sweep", action="store_true", help="try clustering settings (tune on dev only)")
    parser.add_argument("--reembed", action="store_true", help="ignore cached embeddings")
    args = parser.parse_args(argv)
    setup_logging()
    import torch

    torch.set_num_threads(1)
    from stream.stages.speaker_encoder import SpeakerEncoder

    folder = args.dir or REPO / "bench" / "results" / "dialogues" / args.split
    if not any(folder.glob("*.csv")):
        parser.error(f"no dialogues in {folder}: make them with python -m bench.make_dialogue --split {args.split}")
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    encoder = SpeakerEncoder.load(args.encoder)
    load_s = time.perf_counter() - t0
    encoder.embed(np.random.default_rng(0).normal(0, 0.1, 24000).astype(np.float32))  # warm
    rss1 = _rss_mb()
    needs = args.reembed or not all(p.with_suffix(".emb.npy").is_file() for p in folder.glob("*.csv"))
    data = embed_dialogues(folder, encoder if needs else None)
    timings = getattr(embed_dialogues, "timings", [])
    rss2 = _rss_mb()
    base = ClusteringParams()
    result: dict[str, Any] = {
        "folder": str(folder),
        "dialogues": len(data),
        "utterances": sum(len(t) for t, _ in data.values()),
        "encoder": encoder.model_id,
        "encoder_load_s": round(load_s, 3),
        "embed_ms_per_utterance": summarize([t * 1000 for t in timings]) if timings else None,
        "rss_mb": {
            "before": round(rss0, 1),
            "encoder_loaded": round(rss1, 1),
            "after_embedding": round(rss2, 1),
            "added": round(rss2 - rss0, 1),
        },
        "naive": {f"{t:.2f}": run_clusterer(lambda t=t: NaiveClusterer(t), data) for t in NAIVE_THRESHOLDS},
        "online": {"params": dataclasses.asdict(base), **run_clusterer(lambda: OnlineClusterer(base), data)},
    }
    if args.sweep:
        result["sweep"] = sweep(data, base)[:10]
    _print_summary(result, timings_given=bool(timings))
    write_result(f"speakers-{folder.name}", result)
    return 0


def _print_summary(result: dict[str, Any], *, timings_given: bool) -> None:
    for t, r in result["naive"].items():
        print(f"naive threshold {t}: error {r['error_mean']:.3f} (worst {r['error_worst']:.3f})")
    o = result["online"]
    print(
        f"online clusterer: error {o['error_mean']:.3f} (worst {o['error_worst']:.3f}), purity {o['purity_mean']:.3f}, "
        f"coverage {o['coverage_mean']:.3f}, speakers found {o['speakers_found_mean']:.2f}, merges {o['merges']}"
    )
    print(
        f"online clusterer after its corrections and merges: error {o['error_after_corrections_mean']:.3f} "
        f"(worst {o['error_after_corrections_worst']:.3f}), {o['corrections']} corrections "
        f"(made {o['correction_age_utterances']} utterances later)"
    )
    if timings_given:
        e, rss = result["embed_ms_per_utterance"], result["rss_mb"]
        print(f"embedding: {e['p50']:.1f} ms/utterance p50, {e['p95']:.1f} p95; RSS +{rss['added']:.0f} MB")
    for r in result.get("sweep", [])[:5]:
        print(
            f"sweep: t={r['threshold']} pca_dims={r['pca_dims']} merge_after={r['merge_after']}: "
            f"error {r['error_mean']:.3f}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
