"""Classifier throughput: utterances per second, batch 1 vs batched, on CPU (and CUDA when present).

Inputs are the utterances of the spoken test set (``bench.make_testset``: MELD dev text, espeak-ng
audio cut at the truth spans), so text lengths and audio durations are realistic for dialogue. Workloads:
``text`` (the text branch alone, what an utterance without usable audio costs), ``text+context``
(checkpoints with a past-context module: the line plus the cached encodings of the 8 lines before it,
what the stream runs per line; a checkpoint that reads past lines inside its input reads the line with the
words of its latest lines too) and ``text+audio`` (Whisper-encoder features + prosody + fusion).
Without the default checkpoint an untrained model of the default architecture is timed instead
(same cost; the result says so).

Usage: ``python -m bench.classifier [--n 16] [--batches 1,8,16] [--repeats 2]``; ``--full`` uses 64
utterances and 3 repeats.
"""

from __future__ import annotations

import argparse
import csv
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    DEFAULT_CHECKPOINT,
    RESULTS,
    checkpoint_or_untrained,
    markdown_table,
    setup_logging,
    write_result,
)
from stream.records import SAMPLE_RATE_HZ
from training.device import dtype_name
from training.settings import TEXT_DTYPES

logger = logging.getLogger(__name__)


def load_utterances(n: int, *, seed: int = 0) -> tuple[list[str], list[np.ndarray]]:
    """``n`` (text, audio) pairs from a spoken test set built (or reused) under bench/results/."""
    from bench.make_testset import build_testset
    from training.audio import load_audio

    ts = build_testset(RESULTS / f"testset-classifier-{n}", n=n, seed=seed)
    audio = load_audio(ts.wav)
    texts, clips = [], []
    with ts.truth_csv.open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            a, b = round(float(row["start_s"]) * SAMPLE_RATE_HZ), round(float(row["end_s"]) * SAMPLE_RATE_HZ)
            texts.append(row["text"])
            clips.append(audio[a:b].copy())
    return texts, clips


def load_predictor(checkpoint: Path, device: str, text_dtype: str = "float32") -> tuple[Any, str]:
    """The checkpoint's predictor (an untrained stand-in of the same architecture when it is missing)."""
    from training.inference import EmotionPredictor

    path, source = checkpoint_or_untrained(checkpoint)
    return EmotionPredictor.from_checkpoint(path, device=device, text_dtype=text_dtype), source


CONTEXT_UTTERANCES = 8  # the [classifier] default window


def _with_context(predictor: Any, texts: list[str], window: int) -> Callable[[int, int], Any]:
    """What the stream runs per line with past context: one encoder pass for the new line (read with the
    words of its latest lines when the checkpoint reads past lines inside its input), the past lines'
    cached encodings (filled by a first pass), and the context module over them."""
    from training.context import RELATION_UNKNOWN

    first = predictor.predict(texts[:1], [None])[0]
    cache = [first.text_embedding] * window
    k = int(getattr(predictor, "past_lines", 0))
    words = [texts[0]] * max(window, k)

    def run(a: int, b: int) -> Any:
        past = [[(e, RELATION_UNKNOWN) for e in cache[-window:]] for _ in range(a, b)]
        lines = [[(None, w) for w in words[-k:]] for _ in range(a, b)] if k else None
        preds = predictor.predict(texts[a:b], [None] * (b - a), past=past, past_lines=lines)
        cache.extend(p.text_embedding for p in preds)
        words.extend(texts[a:b])
        del cache[:-window], words[: -max(window, k)]
        return preds

    return run


def time_batches(run: Callable[[int, int], Any], n: int, batch: int, repeats: int) -> dict[str, float]:
    """Best of ``repeats`` passes of ``run(start, stop)`` over ``n`` items in batches: items/s and ms/item."""
    best = best_cpu = float("inf")
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        for k in range(0, n, batch):
            run(k, min(n, k + batch))
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    # CPU time is what the work costs; wall time also counts waiting for cores other jobs hold.
    return {"utterances_per_s": n / best, "ms_per_utterance": 1000 * best / n,
            "cpu_ms_per_utterance": 1000 * best_cpu / n}  # fmt: skip


def bench_device(
    predictor: Any, device: str, texts: list[str], clips: list[np.ndarray], *, batches: Sequence[int], repeats: int
) -> list[dict[str, Any]]:
    """Time each workload at each batch size on one device."""
    # What one utterance costs: the text branch alone, the full fusion (audio features + both
    # branches), and the audio features alone (so fusion - features = the networks).
    workloads: dict[str, Callable[[int, int], Any]] = {
        "text": lambda a, b: predictor.predict(texts[a:b], [None] * (b - a)),
    }
    if getattr(predictor, "uses_context", False):
        workloads[f"text+context ({CONTEXT_UTTERANCES} past)"] = _with_context(predictor, texts, CONTEXT_UTTERANCES)
    if predictor.uses_audio:
        workloads["text+audio"] = lambda a, b: predictor.predict(texts[a:b], clips[a:b])
        workloads["audio features only"] = lambda a, b: predictor.audio_features(clips[a:b])
    out = []
    for name, run in workloads.items():
        run(0, 2)  # warm-up: lazy model loads, first-call allocations
        for batch in batches:
            r = time_batches(run, len(texts), batch, repeats)
            out.append({"device": device, "workload": name, "batch": batch, "utt/s": round(r["utterances_per_s"], 1),
                        "ms/utt": round(r["ms_per_utterance"], 1), "cpu ms/utt": round(r["cpu_ms_per_utterance"], 1),
                        **r})  # fmt: skip
            logger.info("%s %s batch %d: %.1f utt/s", device, name, batch, r["utterances_per_s"])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.classifier", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=16, help="utterances (default 16)")
    p.add_argument("--batches", default="1,8,16", help="batch sizes (default 1,8,16)")
    p.add_argument("--repeats", type=int, default=2, help="passes per setting; the best counts (default 2)")
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    p.add_argument("--devices", default="auto", help="cpu,cuda or auto (= cpu, plus cuda when present)")
    p.add_argument("--full", action="store_true", help="64 utterances, batches 1,8,16,32, 3 repeats")
    p.add_argument("--text-dtype", default="float32", choices=TEXT_DTYPES,
                   help="the text encoder's compute dtype ([classifier] text_dtype)")  # fmt: skip
    args = p.parse_args(argv)
    setup_logging()
    import torch

    n, repeats = (64, 3) if args.full else (args.n, args.repeats)
    batches = [1, 8, 16, 32] if args.full else [int(b) for b in args.batches.split(",")]
    devices = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])] if args.devices == "auto" else \
        args.devices.split(",")  # fmt: skip
    texts, clips = load_utterances(n)
    seconds = sum(c.size for c in clips) / SAMPLE_RATE_HZ
    rows, results = [], []
    for device in devices:
        predictor, source = load_predictor(args.checkpoint, device, args.text_dtype)
        for row in bench_device(predictor, device, texts, clips, batches=batches, repeats=repeats):
            results.append(row)
            rows.append({k: row[k] for k in ("device", "workload", "batch", "utt/s", "ms/utt", "cpu ms/utt")})
    table = markdown_table(rows)
    print(table)
    path = write_result("classifier", {
        "settings": {"utterances": len(texts), "audio_s": round(seconds, 2), "repeats": repeats,
                     "checkpoint": source, "torch_threads": torch.get_num_threads(),
                     "text_dtype": dtype_name(predictor.text_dtype)},
        "results": results,
        "table": table,
    })  # fmt: skip
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
