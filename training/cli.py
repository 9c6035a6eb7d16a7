"""``emostream-train`` / ``python -m training``: train | evaluate | ablate | export.

Settings come from ``config.toml``'s ``[training.*]`` sections (``--config``); flags override them.
Relative paths in the config file are taken relative to the file's folder.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.data import LABELS
from training.datasets import RunData, build_datasets
from training.device import resolve_device
from training.distributed import Dist
from training.distributed import setup as setup_distributed
from training.distributed import shutdown as shutdown_distributed
from training.features import AudioFeatureExtractor, FeatureConfig
from training.metrics import plot_confusion, plot_learning_curves
from training.model import CheckpointError, FusionClassifier, ModelConfig
from training.settings import ConfigError, TrainingConfig, load_training_config
from training.text_cli import add_text_parser, cmd_text, evaluate_text_context
from training.train import Dataset, FitResult, TrainOptions, evaluate, fit, seed_everything, usable_rows
from training.weights import ModelError

__all__ = ["main"]

logger = logging.getLogger(__name__)


EPILOG = """commands:
  train     train one model (mode text|audio|fusion) into a run folder: config.json, history.json,
            metrics.json, learning_curves.png, confusion_<set>.png, model.pt (and --out, if given)
  evaluate  evaluate a checkpoint on MELD (+ RAVDESS/EmoDB held-out speakers): --split test --json OUT
  ablate    train and evaluate text-only, audio-only and fusion; writes ablation.md + ablation.json
  export    check a checkpoint loads, then copy it (e.g. to models/emostream-default.pt) and print its summary
  text      fine-tune the text branch on speaker-tagged MELD lines + train its past-context module;
            --audio-from CKPT carries CKPT's audio branch over (evaluate --context past scores the context)

example (the shipped default):
  emostream-train train --text-trainable-layers 3 --lr-encoder 1e-4 --epochs 8 --out models/emostream-default.pt

data-parallel (train, ablate) on N processes of one machine (gloo on CPU, NCCL with one GPU each):
  torchrun --standalone --nproc-per-node N -m training train ...   (same flags; rank 0 writes the files)
"""


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="config.toml with [training.*] (default: ./config.toml if present)")
    p.add_argument("--data-dir", help="MELD folder with {train,dev,test}_sent_emo.csv")
    p.add_argument("--meld-raw-dir", help="MELD.Raw folder (train_splits/ ...): trains the audio branch on MELD audio")
    p.add_argument("--audio-corpora", help="comma-separated audio-only corpora: ravdess,emodb ('' = none)")
    p.add_argument("--cache-dir", help="audio feature cache folder")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--max-train-samples", type=int, help="cap on training rows per corpus (quick runs)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    p.add_argument("-v", "--verbose", action="store_true")


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", choices=("text", "audio", "fusion"))
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--text-encoder", help="packaged name, local folder or hub name (e.g. roberta-base)")
    p.add_argument("--text-trainable-layers", type=int)
    p.add_argument("--audio-encoder", choices=("whisper", "logmel-cnn"))
    p.add_argument("--lr-encoder", type=float)
    p.add_argument("--lr-head", type=float)
    p.add_argument("--use-goemotions", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--run-dir", help="run folder (default: <runs_dir>/<time>-<mode>)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emostream-train",
        description="Train and evaluate emostream's late-fusion (text + audio) emotion classifier.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train one model into a run folder")
    _add_common(tr)
    _add_train_flags(tr)
    tr.add_argument("--out", help="also write the checkpoint here (e.g. models/emostream-default.pt)")
    ev = sub.add_parser("evaluate", help="evaluate a checkpoint")
    _add_common(ev)
    ev.add_argument("--checkpoint", required=True)
    ev.add_argument("--split", choices=("dev", "test"), default="test")
    ev.add_argument("--json", dest="json_out", help="write the metrics JSON here")
    ev.add_argument("--figure", help="write the main confusion matrix PNG here")
    ab = sub.add_parser("ablate", help="text-only vs audio-only vs fusion")
    _add_common(ab)
    _add_train_flags(ab)
    ab.add_argument("--out", help="folder for ablation.md + ablation.json (default: the run folder)")
    ev.add_argument(
        "--context",
        choices=("none", "past"),
        default="none",
        help="text branch reads nothing but the line (none) or also the dialogue's past lines (past)",
    )
    add_text_parser(sub, _add_common)
    ex = sub.add_parser("export", help="verify and copy a checkpoint")
    ex.add_argument("--checkpoint", required=True)
    ex.add_argument("--out", required=True)
    ex.add_argument("-v", "--verbose", action="store_true")
    return parser


# --------------------------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------------------------


def _load_config(args: argparse.Namespace) -> tuple[TrainingConfig, Path]:
    path = args.config or ("config.toml" if Path("config.toml").is_file() else None)
    cfg = load_training_config(path)
    base = Path(path).resolve().parent if path else Path.cwd()
    data: dict[str, Any] = {}
    cwd = str(Path.cwd())
    for flag, key in (("data_dir", "meld_dir"), ("meld_raw_dir", "meld_raw_dir"), ("cache_dir", "cache_dir")):
        if getattr(args, flag, None):
            data[key] = os.path.join(cwd, getattr(args, flag))  # flags are relative to the shell's cwd
    if getattr(args, "audio_corpora", None) is not None:
        data["audio_corpora"] = tuple(c.strip() for c in args.audio_corpora.split(",") if c.strip())
    if getattr(args, "max_train_samples", None) is not None:
        data["max_train_samples"] = args.max_train_samples
    model: dict[str, Any] = {}
    for flag in ("text_encoder", "text_trainable_layers", "audio_encoder"):
        if getattr(args, flag, None) is not None:
            model[flag] = getattr(args, flag)
    optim: dict[str, Any] = {}
    for flag in ("mode", "epochs", "batch_size", "seed", "device", "lr_encoder", "lr_head"):
        if getattr(args, flag, None) is not None:
            optim[flag] = getattr(args, flag)
    if getattr(args, "use_goemotions", None) is not None:
        data["use_goemotions"] = args.use_goemotions
    # Re-validate the overridden values through the strict loader.
    merged = {
        "data": {**dataclasses.asdict(cfg.data), **data},
        "model": {**dataclasses.asdict(cfg.model), **model},
        "optim": {**dataclasses.asdict(cfg.optim), **optim},
        "runs_dir": cfg.runs_dir,
    }
    from training.settings import load_section

    return load_section(TrainingConfig, merged, "training"), base


def _fusion_rule(mode: str, train: Dataset) -> str:
    """``learned`` when some training row has both text and audio (paired data), else ``pool``.

    Without paired rows the head never sees both branches at once (see ``training.model``).
    """
    if mode != "fusion":
        return "learned"
    paired = any(ex.text and train.audio_ok(i) for i, ex in enumerate(train.examples))
    return "learned" if paired else "pool"


def _feature_config(cfg: TrainingConfig) -> FeatureConfig:
    return FeatureConfig(
        encoder=cfg.model.audio_encoder,
        whisper_model=cfg.model.whisper_model,
        prosody=cfg.model.prosody,
        trim_silence=cfg.model.trim_silence,
    )


def _options(cfg: TrainingConfig, progress: bool) -> TrainOptions:
    o = cfg.optim
    return TrainOptions(
        epochs=o.epochs, batch_size=o.batch_size, lr_encoder=o.lr_encoder, lr_head=o.lr_head,
        weight_decay=o.weight_decay, warmup_ratio=o.warmup_ratio, patience_epochs=o.patience_epochs,
        class_weighted_loss=o.class_weighted_loss, class_weight_power=o.class_weight_power,
        modality_dropout=cfg.model.modality_dropout, audio_oversample=o.audio_oversample, seed=o.seed,
        progress=progress,
    )  # fmt: skip


def _audio_base(extractor: AudioFeatureExtractor | None) -> dict[str, str] | None:
    if extractor is None:
        return None
    return {
        "name": extractor.config.whisper_model if extractor.config.encoder == "whisper" else "logmel-cnn",
        "model_id": extractor.model_id,
        "sha256": extractor.model_sha256,
    }


# --------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------


def _evaluate_sets(model: FusionClassifier, sets: Sequence[Dataset], device: Any, bs: int) -> dict[str, Any]:
    out = {}
    for d in sets:
        if usable_rows(model, d):
            out[d.name] = evaluate(model, d, device, bs)
    return out


def train_one(cfg: TrainingConfig, base: Path, run_dir: Path, *, progress: bool) -> tuple[Path, dict[str, Any]]:
    """Train one model per ``cfg`` into ``run_dir``; returns the checkpoint path and test metrics.

    Under ``torchrun`` every process trains its share (see :mod:`training.distributed`); only rank 0
    writes ``run_dir``.
    """
    mode = cfg.optim.mode
    uses_text, uses_audio = mode in ("text", "fusion"), mode in ("audio", "fusion")
    dist, device = setup_distributed(resolve_device(cfg.optim.device))
    main_rank = dist.is_main
    if main_rank:
        run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.optim.num_threads:
        import torch

        torch.set_num_threads(cfg.optim.num_threads)
    seed_everything(cfg.optim.seed)
    fcfg = _feature_config(cfg)
    extractor = AudioFeatureExtractor(fcfg, device=str(device)) if uses_audio else None
    if not main_rank:
        dist.barrier()  # rank 0 fills the feature cache first; the others then read it
    data: RunData = build_datasets(
        cfg.data,
        base_dir=base,
        uses_text=uses_text,
        uses_audio=uses_audio,
        extractor=extractor,
        seed=cfg.optim.seed,
        progress=progress and main_rank,
    )
    if main_rank:
        dist.barrier()
        (run_dir / "config.json").write_text(
            json.dumps(
                {
                    "training": dataclasses.asdict(cfg),
                    "data": data.report,
                    "trained_on": data.trained_on,
                    "processes": dist.world,
                },
                indent=2,
            ),
            encoding="utf-8",
        )
    mcfg = ModelConfig(
        labels=LABELS, mode=mode, text_encoder=cfg.model.text_encoder,
        text_trainable_layers=cfg.model.text_trainable_layers, max_text_tokens=cfg.model.max_text_tokens,
        audio_dim=extractor.dim if extractor else 0, audio_kind=cfg.model.audio_encoder,
        hidden_dim=cfg.model.hidden_dim, dropout=cfg.model.dropout,
        fusion=_fusion_rule(mode, data.train), audio_weight=cfg.model.pool_audio_weight,
    )  # fmt: skip
    logger.info("fusion rule: %s", mcfg.fusion)
    model = FusionClassifier(mcfg, fcfg if uses_audio else None)
    if uses_audio and data.train.features is not None and data.train.has_audio is not None:
        import torch

        rows = data.train.features[data.train.has_audio]
        if len(rows):
            model.set_audio_normalization(torch.from_numpy(rows.mean(0)), torch.from_numpy(rows.std(0)))
    logger.info(
        "training %s on %d rows (%s); dev: %s",
        mode,
        len(data.train),
        device,
        ", ".join(f"{d.name}={len(d)}" for d in data.dev),
    )
    history_path = run_dir / "history.json"

    def on_epoch(row: dict[str, Any]) -> None:
        if not main_rank:
            return
        rows = json.loads(history_path.read_text()) if history_path.exists() else []
        rows.append({k: v for k, v in row.items() if k != "step_losses"})
        history_path.write_text(json.dumps(rows, indent=2), encoding="utf-8")

    if main_rank:
        history_path.unlink(missing_ok=True)
    result: FitResult = fit(model, data.train, data.dev, _options(cfg, progress and main_rank), device,
                            on_epoch=on_epoch, dist=dist)  # fmt: skip
    bs = cfg.optim.batch_size * 2
    metrics: dict[str, Any] = {
        "best_epoch": result.best_epoch,
        "best_dev_score": result.best_score,
        "train_seconds": round(result.seconds, 1),
        "dev": _evaluate_sets(model, data.dev, device, bs),
        "test": _evaluate_sets(model, data.test, device, bs),
    }
    if not main_rank:
        return run_dir / "model.pt", metrics
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    plot_learning_curves(result.history, run_dir / "learning_curves.png", f"{mode} ({run_dir.name})")
    for name, m in metrics["test"].items():
        plot_confusion(
            m["confusion"],
            LABELS,
            run_dir / f"confusion_{name}.png",
            f"{name}: weighted-F1 {m['weighted_f1']:.3f}, acc {m['accuracy']:.3f} (n={m['n']})",
        )
    summary = {
        name: {k: m[k] for k in ("weighted_f1", "macro_f1", "accuracy", "n")}
        | {"per_class_f1": {c: v["f1"] for c, v in m["per_class"].items()}}
        for name, m in metrics["test"].items()
    }
    ckpt = model.save(
        run_dir / "model.pt", metrics={"test": summary, "best_epoch": result.best_epoch},
        trained_on=data.trained_on, audio_model=_audio_base(extractor),
        extra={"run": run_dir.name, "training_config": dataclasses.asdict(cfg)},
    )  # fmt: skip
    return ckpt, metrics


def _run_dir(cfg: TrainingConfig, base: Path, args: argparse.Namespace, suffix: str) -> Path:
    if getattr(args, "run_dir", None):
        return Path(args.run_dir)
    root = Path(cfg.runs_dir) if Path(cfg.runs_dir).is_absolute() else base / cfg.runs_dir
    # Under torchrun only rank 0 writes, so the name (a time stamp) need not agree across processes.
    return root / f"{dt.datetime.now(dt.UTC).strftime('%Y%m%d-%H%M%S')}-{suffix}"


def _is_main() -> bool:
    from training.distributed import from_env

    return from_env().is_main


def cmd_train(args: argparse.Namespace) -> int:
    cfg, base = _load_config(args)
    run_dir = _run_dir(cfg, base, args, cfg.optim.mode)
    ckpt, metrics = train_one(cfg, base, run_dir, progress=not args.no_progress)
    if not _is_main():
        return 0
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ckpt, args.out)
    print(f"run folder: {run_dir}")
    print(f"checkpoint: {args.out or ckpt} ({ckpt.stat().st_size / 1e6:.1f} MB)")
    for name, m in metrics["test"].items():
        print(
            f"{name:14s} weighted-F1 {m['weighted_f1']:.4f}  macro-F1 {m['macro_f1']:.4f}  "
            f"accuracy {m['accuracy']:.4f}  n={m['n']}"
        )
    return 0


# --------------------------------------------------------------------------------------------
# evaluate / ablate / export
# --------------------------------------------------------------------------------------------


def cmd_evaluate(args: argparse.Namespace) -> int:
    cfg, base = _load_config(args)
    device = resolve_device(args.device or cfg.optim.device)
    model = FusionClassifier.from_checkpoint(args.checkpoint, device=str(device))
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
    results = _evaluate_sets(model, sets, device, 64)
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
            "corpora": {k: {kk: vv for kk, vv in v.items() if kk not in ("labels",)} for k, v in results.items()},
        }
    )
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(out, indent=2), encoding="utf-8")
    if args.figure:
        plot_confusion(out["confusion"], LABELS, args.figure, f"{primary}: weighted-F1 {out['weighted_f1']:.3f}")
    for name, m in results.items():
        print(
            f"{name:14s} weighted-F1 {m['weighted_f1']:.4f}  macro-F1 {m['macro_f1']:.4f}  "
            f"accuracy {m['accuracy']:.4f}  n={m['n']}"
        )
        print("  per-class F1: " + ", ".join(f"{c} {v['f1']:.3f}" for c, v in m["per_class"].items()))
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    cfg, base = _load_config(args)
    root = _run_dir(cfg, base, args, "ablate")
    table: dict[str, dict[str, Any]] = {}
    for mode in ("text", "audio", "fusion"):
        mcfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, mode=mode))
        _, metrics = train_one(mcfg, base, root / mode, progress=not args.no_progress)
        table[mode] = {
            name: {k: m[k] for k in ("weighted_f1", "macro_f1", "accuracy", "n")} for name, m in metrics["test"].items()
        }
    if not _is_main():
        return 0
    out = Path(args.out) if args.out else root
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.json").write_text(json.dumps(table, indent=2), encoding="utf-8")
    sets = sorted({s for row in table.values() for s in row})
    lines = ["| mode | " + " | ".join(f"{s} wF1 / acc" for s in sets) + " |", "|---" * (len(sets) + 1) + "|"]
    for mode, row in table.items():
        cells = [f"{row[s]['weighted_f1']:.3f} / {row[s]['accuracy']:.3f}" if s in row else "-" for s in sets]
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    (out / "ablation.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
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


def main(argv: Sequence[str] | None = None) -> int:
    """``emostream-train``; returns the exit status. A closed stdout (``... | head``) ends it quietly."""
    try:
        status = _main(argv)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
        return status
    except BrokenPipeError:
        # Python flushes stdout again at exit: point it at /dev/null so that flush cannot raise.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        return 128 + 13  # what a shell reports for a tool killed by SIGPIPE


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args.argv = list(argv) if argv is not None else None

    def text(a: argparse.Namespace) -> int:
        return cmd_text(a, _load_config)

    commands = {"train": cmd_train, "evaluate": cmd_evaluate, "ablate": cmd_ablate, "export": cmd_export, "text": text}
    if Dist().world != _world() and args.command not in ("train", "ablate"):
        print(f"emostream-train: error: {args.command} runs in one process; only train and ablate run under "
              "torchrun", file=sys.stderr)  # fmt: skip
        return 2
    try:
        return commands[args.command](args)
    except (ConfigError, CheckpointError, ModelError, FileNotFoundError, ValueError) as exc:
        print(f"emostream-train: error: {exc}", file=sys.stderr)
        return 2
    finally:
        shutdown_distributed()


def _world() -> int:
    from training.distributed import from_env

    return from_env().world
