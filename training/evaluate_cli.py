"""``emostream-train evaluate`` (a checkpoint's metrics) and ``emostream-train export`` (check and copy one)."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from training.cli_common import evaluate_sets, load_config, metrics_line
from training.data import LABELS
from training.datasets import build_datasets
from training.device import resolve_device
from training.features import AudioFeatureExtractor
from training.metrics import plot_confusion
from training.model import FusionClassifier
from training.text_cli import evaluate_text_context

__all__ = ["cmd_evaluate", "cmd_export"]


def cmd_evaluate(args: argparse.Namespace) -> int:
    cfg, base = load_config(args)
    device = resolve_device(args.device or cfg.optim.device)
    model = FusionClassifier.from_checkpoint(args.checkpoint, device=str(device))
    model.run_text_as(args.text_dtype)  # as the service runs it ([classifier] text_dtype)
    uses_audio = model.config.uses_audio
    extractor = AudioFeatureExtractor(model.feature_config, device=str(device)) if model.feature_config else None
    data = build_datasets(
        cfg.data,
        base_dir=base,
        uses_text=model.config.uses_text,
        uses_audio=uses_audio,
        extractor=extractor,
        seed=cfg.optim.seed,
        progress=not args.no_progress,
    )
    sets = data.dev if args.split == "dev" else data.test
    results = evaluate_sets(model, sets, device, 64)
    if not results:
        raise ValueError(f"no {args.split} data this checkpoint can be evaluated on")
    if (model.config.text_head == "linear" or hasattr(model, "context")) and f"meld_{args.split}" in results:
        # Speaker-tagged lines through the text branch (+ its past context with --context past).
        meld_dir = Path(cfg.data.meld_dir) if Path(cfg.data.meld_dir).is_absolute() else base / cfg.data.meld_dir
        results[f"meld_{args.split}"] = evaluate_text_context(model, meld_dir, args.split, args.context, device)
    elif args.context == "past":
        raise ValueError(f"--context past: checkpoint {args.checkpoint} has no past-context module")
    primary = next((k for k in results if k.startswith("meld")), next(iter(results)))
    out = {k: v for k, v in results[primary].items() if k != "labels"}
    out.update(
        {
            "dataset": primary,
            "split": args.split,
            "checkpoint": str(args.checkpoint),
            "text_dtype": args.text_dtype,
            "corpora": {k: {kk: vv for kk, vv in v.items() if kk not in ("labels",)} for k, v in results.items()},
        }
    )
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(out, indent=2), encoding="utf-8")
    if args.figure:
        plot_confusion(out["confusion"], LABELS, args.figure, f"{primary}: weighted-F1 {out['weighted_f1']:.3f}")
    for name, m in results.items():
        print(metrics_line(name, m))
        print("  per-class F1: " + ", ".join(f"{c} {v['f1']:.3f}" for c, v in m["per_class"].items()))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    model = FusionClassifier.from_checkpoint(args.checkpoint, device="cpu")
    meta = model.checkpoint_meta
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if Path(args.checkpoint).resolve() != out.resolve():
        shutil.copyfile(args.checkpoint, out)
    summary = {
        "checkpoint": str(out),
        "size_mb": round(out.stat().st_size / 1e6, 2),
        "modalities": meta.get("modalities"),
        "base_models": meta.get("base_models"),
        "trained_on": meta.get("trained_on"),
        "metrics": meta.get("metrics"),
    }
    print(json.dumps(summary, indent=2))
    return 0
