"""What the ``emostream-train`` subcommands share: their flags, the config with flag overrides, run folders.

Settings come from ``config.toml``'s ``[training.*]`` sections (``--config``); flags override them.
Relative paths in the config file are taken relative to the file's folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.model import FusionClassifier
from training.settings import TrainingConfig, load_section, load_training_config
from training.train import Dataset, evaluate, usable_rows

__all__ = [
    "add_common",
    "add_train_flags",
    "evaluate_sets",
    "is_main",
    "load_config",
    "metrics_line",
    "run_dir",
    "world",
]


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="config.toml with [training.*] (default: ./config.toml if present)")
    p.add_argument("--data-dir", help="MELD folder with {train,dev,test}_sent_emo.csv")
    p.add_argument("--meld-raw-dir", help="MELD.Raw folder (train_splits/ ...): trains the audio branch on MELD audio")
    p.add_argument("--audio-corpora", help="comma-separated audio-only corpora: ravdess,emodb ('' = none)")
    p.add_argument("--cache-dir", help="audio feature cache folder")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--max-train-samples", type=int, help="cap on training rows per corpus (quick runs)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    p.add_argument("-v", "--verbose", action="store_true")


def add_train_flags(p: argparse.ArgumentParser) -> None:
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


def load_config(args: argparse.Namespace) -> tuple[TrainingConfig, Path]:
    """The ``[training]`` config that ``--config`` names (or ./config.toml), with the flags over it; and its folder."""
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
    return load_section(TrainingConfig, merged, "training"), base


def run_dir(cfg: TrainingConfig, base: Path, args: argparse.Namespace, suffix: str) -> Path:
    """``--run-dir``, or a new time-stamped folder under ``runs_dir`` named with ``suffix``."""
    if getattr(args, "run_dir", None):
        return Path(args.run_dir)
    root = Path(cfg.runs_dir) if Path(cfg.runs_dir).is_absolute() else base / cfg.runs_dir
    # Under torchrun only rank 0 writes, so the name (a time stamp) need not agree across processes.
    return root / f"{dt.datetime.now(dt.UTC).strftime('%Y%m%d-%H%M%S')}-{suffix}"


def is_main() -> bool:
    """Whether this process writes the files (rank 0 under ``torchrun``, or the only process)."""
    from training.distributed import from_env

    return from_env().is_main


def world() -> int:
    """How many processes ``torchrun`` started (1 without it)."""
    from training.distributed import from_env

    return from_env().world


def evaluate_sets(model: FusionClassifier, sets: Sequence[Dataset], device: Any, bs: int) -> dict[str, Any]:
    """Metrics of ``model`` on each of ``sets`` it has usable rows in, by set name."""
    out = {}
    for d in sets:
        if usable_rows(model, d):
            out[d.name] = evaluate(model, d, device, bs)
    return out


def metrics_line(name: str, m: dict[str, Any]) -> str:
    """One set's headline figures, as the subcommands print them."""
    return (
        f"{name:14s} weighted-F1 {m['weighted_f1']:.4f}  macro-F1 {m['macro_f1']:.4f}  "
        f"accuracy {m['accuracy']:.4f}  n={m['n']}"
    )
