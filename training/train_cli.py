"""``emostream-train train`` (one model into a run folder) and ``emostream-train ablate`` (text vs audio vs fusion).

Under ``torchrun`` every process trains its share (see :mod:`training.distributed`); only rank 0 writes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from training.cli_common import evaluate_sets, is_main, load_config, metrics_line, run_dir
from training.data import LABELS
from training.datasets import RunData, build_datasets
from training.device import resolve_device
from training.distributed import Dist
from training.distributed import setup as setup_distributed
from training.features import AudioFeatureExtractor, FeatureConfig
from training.metrics import plot_confusion, plot_learning_curves
from training.model import FusionClassifier
from training.model_config import ModelConfig
from training.settings import TrainingConfig
from training.train import Dataset, FitResult, TrainOptions, fit, seed_everything

__all__ = ["cmd_ablate", "cmd_train", "train_one"]

logger = logging.getLogger(__name__)


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


def train_one(cfg: TrainingConfig, base: Path, run_dir: Path, *, progress: bool) -> tuple[Path, dict[str, Any]]:
    """Train one model per ``cfg`` into ``run_dir``; returns the checkpoint path and test metrics.

    Under ``torchrun`` every process trains its share (see :mod:`training.distributed`); only rank 0
    writes ``run_dir``.
    """
    mode = cfg.optim.mode
    dist, device = setup_distributed(resolve_device(cfg.optim.device))
    main_rank = dist.is_main
    if main_rank:
        run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.optim.num_threads:
        import torch

        torch.set_num_threads(cfg.optim.num_threads)
    seed_everything(cfg.optim.seed)
    fcfg = _feature_config(cfg)
    extractor = AudioFeatureExtractor(fcfg, device=str(device)) if mode in ("audio", "fusion") else None
    data = _datasets(cfg, base, run_dir, extractor, dist, progress=progress)
    model = _new_model(cfg, fcfg, extractor, data.train)
    logger.info(
        "training %s on %d rows (%s); dev: %s",
        mode,
        len(data.train),
        device,
        ", ".join(f"{d.name}={len(d)}" for d in data.dev),
    )
    history_path = run_dir / "history.json"
    if main_rank:
        history_path.unlink(missing_ok=True)
    result: FitResult = fit(model, data.train, data.dev, _options(cfg, progress and main_rank), device,
                            on_epoch=_history_writer(history_path, main_rank), dist=dist)  # fmt: skip
    bs = cfg.optim.batch_size * 2
    metrics: dict[str, Any] = {
        "best_epoch": result.best_epoch,
        "best_dev_score": result.best_score,
        "train_seconds": round(result.seconds, 1),
        "dev": evaluate_sets(model, data.dev, device, bs),
        "test": evaluate_sets(model, data.test, device, bs),
    }
    if not main_rank:
        return run_dir / "model.pt", metrics
    return _write_run(cfg, run_dir, model, result, metrics, data=data, extractor=extractor), metrics


def _datasets(
    cfg: TrainingConfig,
    base: Path,
    run_dir: Path,
    extractor: AudioFeatureExtractor | None,
    dist: Dist,
    *,
    progress: bool,
) -> RunData:
    """The run's data sets; rank 0 builds them first (filling the feature cache) and writes config.json."""
    mode = cfg.optim.mode
    if not dist.is_main:
        dist.barrier()  # rank 0 fills the feature cache first; the others then read it
    data: RunData = build_datasets(
        cfg.data,
        base_dir=base,
        uses_text=mode in ("text", "fusion"),
        uses_audio=mode in ("audio", "fusion"),
        extractor=extractor,
        seed=cfg.optim.seed,
        progress=progress and dist.is_main,
    )
    if dist.is_main:
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
    return data


def _new_model(
    cfg: TrainingConfig, fcfg: FeatureConfig, extractor: AudioFeatureExtractor | None, train: Dataset
) -> FusionClassifier:
    """An untrained model for ``cfg``, its audio inputs normalised with the training rows' statistics."""
    mode = cfg.optim.mode
    uses_audio = mode in ("audio", "fusion")
    mcfg = ModelConfig(
        labels=LABELS, mode=mode, text_encoder=cfg.model.text_encoder,
        text_trainable_layers=cfg.model.text_trainable_layers, max_text_tokens=cfg.model.max_text_tokens,
        audio_dim=extractor.dim if extractor else 0, audio_kind=cfg.model.audio_encoder,
        hidden_dim=cfg.model.hidden_dim, dropout=cfg.model.dropout,
        fusion=_fusion_rule(mode, train), audio_weight=cfg.model.pool_audio_weight,
    )  # fmt: skip
    logger.info("fusion rule: %s", mcfg.fusion)
    model = FusionClassifier(mcfg, fcfg if uses_audio else None)
    if uses_audio and train.features is not None and train.has_audio is not None:
        import torch

        rows = train.features[train.has_audio]
        if len(rows):
            model.set_audio_normalization(torch.from_numpy(rows.mean(0)), torch.from_numpy(rows.std(0)))
    return model


def _history_writer(history_path: Path, main_rank: bool) -> Callable[[dict[str, Any]], None]:
    """``fit``'s ``on_epoch``: rank 0 appends each epoch's row (without step losses) to history.json."""

    def on_epoch(row: dict[str, Any]) -> None:
        if not main_rank:
            return
        rows = json.loads(history_path.read_text()) if history_path.exists() else []
        rows.append({k: v for k, v in row.items() if k != "step_losses"})
        history_path.write_text(json.dumps(rows, indent=2), encoding="utf-8")

    return on_epoch


def _write_run(
    cfg: TrainingConfig,
    run_dir: Path,
    model: FusionClassifier,
    result: FitResult,
    metrics: dict[str, Any],
    *,
    data: RunData,
    extractor: AudioFeatureExtractor | None,
) -> Path:
    """metrics.json, the learning curves, a confusion matrix per test set and the checkpoint (returned)."""
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    plot_learning_curves(result.history, run_dir / "learning_curves.png", f"{cfg.optim.mode} ({run_dir.name})")
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
    return model.save(
        run_dir / "model.pt", metrics={"test": summary, "best_epoch": result.best_epoch},
        trained_on=data.trained_on, audio_model=_audio_base(extractor),
        extra={"run": run_dir.name, "training_config": dataclasses.asdict(cfg)},
    )  # fmt: skip


def cmd_train(args: argparse.Namespace) -> int:
    cfg, base = load_config(args)
    folder = run_dir(cfg, base, args, cfg.optim.mode)
    ckpt, metrics = train_one(cfg, base, folder, progress=not args.no_progress)
    if not is_main():
        return 0
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ckpt, args.out)
    print(f"run folder: {folder}")
    print(f"checkpoint: {args.out or ckpt} ({ckpt.stat().st_size / 1e6:.1f} MB)")
    for name, m in metrics["test"].items():
        print(metrics_line(name, m))
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    cfg, base = load_config(args)
    root = run_dir(cfg, base, args, "ablate")
    table: dict[str, dict[str, Any]] = {}
    for mode in ("text", "audio", "fusion"):
        mcfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, mode=mode))
        _, metrics = train_one(mcfg, base, root / mode, progress=not args.no_progress)
        table[mode] = {
            name: {k: m[k] for k in ("weighted_f1", "macro_f1", "accuracy", "n")} for name, m in metrics["test"].items()
        }
    if not is_main():
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
