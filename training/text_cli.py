"""``emostream-train text``: the fine-tuned text branch, its past-context module, and their evaluation.

Stage 1 fine-tunes the encoder + a linear head on speaker-tagged MELD lines
(:mod:`training.text_branch`); stage 2 trains the context module on the cached encodings of the
dialogue's previous lines (:mod:`training.context_train`). ``--audio-from`` carries an existing
checkpoint's audio branch (and its head for audio-only rows) into the new checkpoint, so the
shipped default keeps hearing the voice; rows with both are fused by that checkpoint's rule.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from training.checkpoint import TEXT_ENCODER_DTYPES, CheckpointError, round_trip_text
from training.context_train import (
    ContextOptions,
    EncodedSplit,
    encode_split,
    predict_split,
    train_context,
    train_context_cv,
)
from training.data import LABELS, load_meld
from training.device import resolve_device
from training.metrics import classification_metrics, plot_confusion
from training.model import FusionClassifier
from training.model_config import ModelConfig
from training.settings import TrainingConfig
from training.text_branch import TextBranchOptions, train_text_branch
from training.text_lora import PEFT_MISSING, add_lora, merge_lora, peft_installed
from training.weights import resolve_text_encoder

__all__ = ["add_text_parser", "cmd_text", "compose_with_audio", "meld_text_metrics"]

logger = logging.getLogger(__name__)

ConfigLoader = Callable[[argparse.Namespace], tuple[TrainingConfig, Path]]


def add_text_parser(sub: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("text", help="fine-tune the text branch (+ past-context module) on MELD")
    add_common(p)
    p.add_argument("--text-encoder", help="packaged name, local folder or hub name")
    p.add_argument("--epochs", type=int, default=3, help="stage-1 epochs (default 3)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr-encoder", type=float, default=8e-5, help="peak one-cycle learning rate (default 8e-5)")
    p.add_argument("--lr-head", type=float, help="the linear head's peak learning rate (default: --lr-encoder)")
    p.add_argument(
        "--trainable-layers",
        type=int,
        default=0,
        help="fine-tune only the top N encoder layers (0 = all); the output of the frozen ones is computed "
        "once and cached, so an epoch costs what the top N cost (how MPNet-base trains here)",
    )
    p.add_argument(
        "--text-encoder-dtype",
        choices=TEXT_ENCODER_DTYPES,
        default="float16",
        help="how the checkpoint stores the trained encoder layers (int8: per-row scales, a quarter of float32; "
        "lowrank, with --lora-rank: the adapters' change from the packaged encoder, a few MB for every layer); "
        "the reported metrics are those of the stored weights",
    )
    p.add_argument(
        "--lora-rank",
        type=int,
        default=0,
        help="train LoRA adapters of this rank (peft) on the trained layers instead of their weights, then "
        "merge them in: the checkpoint and the service see plain layers (0 = off; try --lr-encoder 5e-4)",
    )
    p.add_argument("--lora-alpha", type=int, help="LoRA scaling alpha (default: 2 x --lora-rank)")
    p.add_argument(
        "--past-lines",
        type=int,
        default=0,
        help="read each line with up to N previous lines of its dialogue inside the encoder's input (a pair, "
        "pooled over the line's own tokens; needs every layer trained; 0 = the line alone)",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--distill-from",
        nargs="+",
        metavar="CHECKPOINT",
        help="one or more text checkpoints to distil (e.g. models/emostream-mpnet.pt, or runs of one recipe with "
        "different seeds: their logits are averaged); their soft labels on every training line join the loss, "
        "computed once per teacher and cached",
    )
    p.add_argument("--distill-weight", type=float, default=0.5, help="share of the loss from the teacher (0.5)")
    p.add_argument(
        "--extra-text",
        choices=("goemotions",),
        help="add single-label GoEmotions train rows (Reddit, Ekman labels = MELD's 7; [data] goemotions_dir) "
        "to stage 1, each tagged as a known writer; a teacher does not score them. Dev stays MELD dev",
    )
    p.add_argument("--extra-per-class", type=int, default=1000, help="at most this many extra rows per label (1000)")
    p.add_argument("--distill-temperature", type=float, default=2.0, help="softening temperature (2)")
    p.add_argument(
        "--unknown-speaker-prob",
        type=float,
        default=0.2,
        help="share of training lines shown with the unknown-speaker tag S? (default 0.2)",
    )
    p.add_argument("--context-window", type=int, default=8, help="previous utterances read (0 = no context module)")
    p.add_argument("--context-epochs", type=int, default=12, help="context epochs (with --context-fit dev: at most)")
    p.add_argument(
        "--context-kind",
        choices=("attention", "transition"),
        default="attention",
        help="attention over past encodings, or a small emotion-transition model (see training.context)",
    )
    p.add_argument(
        "--context-fit",
        choices=("train", "dev"),
        default="train",
        help="fit the context module on MELD train (early stopping on dev) or on dev (5-fold CV picks "
        "the epochs): the text branch trained on train, so its train encodings are overconfident",
    )
    p.add_argument("--context-lr", type=float, default=1e-3)
    p.add_argument("--init-from", help="start from this checkpoint's text branch (no stage 1); its audio branch stays")
    p.add_argument("--encodings", help="reuse the line encodings a run with the same --init-from wrote (encodings.pt)")
    p.add_argument("--audio-from", help="take the audio branch from this checkpoint (e.g. the shipped default)")
    p.add_argument("--run-dir", help="run folder (default: <runs_dir>/<time>-text)")
    p.add_argument("--out", help="also write the checkpoint here (e.g. models/emostream-default.pt)")


def _check_past_lines(args: argparse.Namespace) -> None:
    if not 0 <= args.past_lines <= 16:
        raise ValueError(f"--past-lines must lie in [0, 16], got {args.past_lines}")
    if args.past_lines and (args.trainable_layers or args.init_from):
        raise ValueError("--past-lines trains every layer in stage 1: drop --trainable-layers and --init-from")


def _check(args: argparse.Namespace) -> None:
    lr_head_bad = args.lr_head is not None and args.lr_head <= 0
    if args.epochs < 1 or args.batch_size < 1 or args.lr_encoder <= 0 or lr_head_bad:
        raise ValueError("--epochs and --batch-size must be >= 1, --lr-encoder and --lr-head > 0")
    if not 0.0 < args.distill_weight <= 1.0 or args.distill_temperature <= 0:
        raise ValueError("--distill-weight must lie in (0, 1] and --distill-temperature be > 0")
    if args.distill_from and args.init_from:
        raise ValueError("--distill-from trains stage 1; --init-from skips it: give one of them")
    if args.trainable_layers < 0:
        raise ValueError(f"--trainable-layers must be >= 0 (0 = all), got {args.trainable_layers}")
    _check_past_lines(args)
    if not 0.0 <= args.unknown_speaker_prob <= 1.0:
        raise ValueError(f"--unknown-speaker-prob must lie in [0, 1], got {args.unknown_speaker_prob}")
    if args.lora_rank < 0 or (args.lora_alpha is not None and args.lora_alpha <= 0):
        raise ValueError(f"--lora-rank must be >= 0 (0 = off) and --lora-alpha > 0, got {args.lora_rank}, "
                         f"{args.lora_alpha}")  # fmt: skip
    if args.lora_rank and args.init_from:
        raise ValueError("--lora-rank trains stage 1; --init-from skips it: give one of them")
    if args.lora_rank and not peft_installed():  # before hours of caching, not after
        raise ValueError(f"--lora-rank: {PEFT_MISSING}")
    if args.text_encoder_dtype == "lowrank" and not args.lora_rank and not args.init_from:
        raise ValueError(
            "--text-encoder-dtype lowrank stores the adapters' change: it needs --lora-rank "
            "(or --init-from a checkpoint stored so)"
        )
    if args.extra_per_class < 1:
        raise ValueError(f"--extra-per-class must be >= 1, got {args.extra_per_class}")
    if args.extra_text and args.init_from:
        raise ValueError("--extra-text trains stage 1; --init-from skips it: give one of them")
    if not 0 <= args.context_window <= 64:
        raise ValueError(f"--context-window must lie in [0, 64], got {args.context_window}")
    for flag in ("init_from", "audio_from", "distill_from"):
        given = getattr(args, flag) or []
        for path in [given] if isinstance(given, str) else given:
            if not Path(path).is_file():
                raise FileNotFoundError(f"--{flag.replace('_', '-')} {path} does not exist")
    if args.audio_from:  # checked before training, not after it: a late failure would lose the trained model
        _audio_config(FusionClassifier.read_checkpoint(args.audio_from), args.audio_from)


def meld_text_metrics(model: FusionClassifier, split: EncodedSplit, window: int, device: torch.device,
                      ) -> dict[str, Any]:  # fmt: skip
    """MELD metrics of the text branch: per speaker mode (tags known / unknown) and context mode."""
    out: dict[str, Any] = {}
    modes = {"single": 0, "context": window} if window and hasattr(model, "context") else {"single": 0}
    for mode, w in modes.items():
        for speakers in (True, False):
            logits = predict_split(model, split, window=w, speakers=speakers, device=device)
            key = mode if speakers else f"{mode}_unknown_speakers"
            out[key] = classification_metrics(split.labels, logits.argmax(1), model.config.labels)
    return out


def _audio_config(blob: dict[str, Any], audio_path: str | Path) -> ModelConfig:
    """The model config of an ``--audio-from`` checkpoint, which must have an audio branch of its own."""
    old = ModelConfig.from_dict(blob["model_config"])
    if not old.uses_audio:
        hint = " (its audio comes from a fusion head: add one with `python -m training.fuse --base`)"
        raise CheckpointError(
            f"{audio_path} has no audio branch to carry over" + (hint if "audio_fusion" in blob else "")
        )
    return old


def compose_with_audio(
    text_model: FusionClassifier, audio_path: str | Path
) -> tuple[FusionClassifier, dict[str, str], dict[str, str]]:
    """A fusion model: ``text_model``'s text branch + ``audio_path``'s audio branch and head; with the
    audio base model and what the audio branch was trained on (for the checkpoint's metadata)."""
    blob = FusionClassifier.read_checkpoint(audio_path)
    old = _audio_config(blob, audio_path)
    from training.features import FeatureConfig

    fcfg = FeatureConfig.from_dict(blob["feature_config"])
    t = text_model.config
    cfg = dataclasses.replace(old, mode="fusion", text_encoder=t.text_encoder,
                              text_trainable_layers=t.text_trainable_layers, max_text_tokens=t.max_text_tokens,
                              text_head="linear", context=dict(t.context), text_past_lines=t.text_past_lines,
                              max_pair_tokens=t.max_pair_tokens)  # fmt: skip
    model = FusionClassifier(cfg, fcfg, text_model=text_model.text_model)
    audio_state = {k: v for k, v in blob["state_dict"].items() if not k.startswith("text_encoder.")}
    model.load_state_dict(audio_state, strict=False)
    text_state = {k: v for k, v in text_model.state_dict().items()
                  if k.startswith(("text_encoder.", "text_head.", "context."))}  # fmt: skip
    model.load_state_dict(text_state, strict=False)
    audio_base = dict(blob["base_models"].get("audio", {}))
    audio_trained_on = {k: v for k, v in blob.get("trained_on", {}).items() if k.startswith("audio")}
    return model.eval(), audio_base, audio_trained_on


def _encodings(model: FusionClassifier, splits: dict[str, list[Any]], device: torch.device, reuse: str | None,
               run_dir: Path) -> dict[str, EncodedSplit]:  # fmt: skip
    """Every split's cached line encodings: read from ``reuse`` when given (the same checkpoint's
    ``encodings.pt``), else computed and written to the run folder for later runs."""
    if reuse:
        blob = torch.load(reuse, map_location="cpu", weights_only=False)
        if blob.get("text_state_sha") != _text_state_sha(model):
            raise ValueError(f"--encodings {reuse} was computed with another text branch")
        return dict(blob["splits"])
    out = {name: encode_split(model, exs, device) for name, exs in splits.items()}
    torch.save({"text_state_sha": _text_state_sha(model), "splits": out}, run_dir / "encodings.pt")
    return out


def _text_state_sha(model: FusionClassifier) -> str:
    import hashlib

    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        if key.startswith(("text_encoder.", "text_head.", "text_proj.", "head.")):
            digest.update(key.encode())
            digest.update(value.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def _summary(m: dict[str, Any]) -> dict[str, Any]:
    return {k: m[k] for k in ("weighted_f1", "macro_f1", "accuracy", "n")} | {
        "per_class_f1": {c: v["f1"] for c, v in m["per_class"].items()}
    }


def cmd_text(args: argparse.Namespace, load_config: ConfigLoader) -> int:
    _check(args)
    cfg, base = load_config(args)
    device = resolve_device(cfg.optim.device)
    if cfg.optim.num_threads:
        torch.set_num_threads(cfg.optim.num_threads)
    meld_dir = Path(cfg.data.meld_dir) if Path(cfg.data.meld_dir).is_absolute() else base / cfg.data.meld_dir
    train, dev, test = (load_meld(meld_dir, s) for s in ("train", "dev", "test"))
    if cfg.data.max_train_samples:
        train = train[: cfg.data.max_train_samples]  # whole dialogues first: the rows are in file order
    from training.cli_common import run_dir as _run_dir

    run_dir = _run_dir(cfg, base, args, "text")
    run_dir.mkdir(parents=True, exist_ok=True)
    command = "emostream-train " + shlex.join(sys.argv[1:] if args.argv is None else args.argv)
    report: dict[str, Any] = {"command": command}
    audio_base: dict[str, str] | None = None
    trained_on = {"text": f"MELD train ({len(train)} lines, {meld_dir.name}/train_sent_emo.csv), speaker-tagged"}
    if args.distill_from:
        teachers = ", ".join(Path(p).name if len(args.distill_from) == 1 else str(p) for p in args.distill_from)
        mean = "the mean logits of " if len(args.distill_from) > 1 else ""
        trained_on["text"] += f"; distilled from {mean}{teachers} (weight {args.distill_weight})"
    extra = _extra_text(args, cfg, base)
    if extra:
        trained_on["text"] += (
            f"; + {len(extra)} {args.extra_text} train rows (at most {args.extra_per_class} per label)"
        )
    if args.init_from:
        model, trained_on, audio_base = _from_checkpoint(args, report, device)
    else:
        model = _stage1(args, cfg, train, extra, dev, report, device)
    storage = _storage(args, model)  # what is measured from here on is what gets stored
    round_trip_text(model, storage["text_encoder_dtype"], storage["text_delta_rank"])
    # Train encodings are read only by a context module fitted on train (a full encoder pass over 10k lines).
    needed = {"dev": dev, "test": test}
    if args.context_window and args.context_fit == "train":
        needed["train"] = train
    encoded = _encodings(model, needed, device, args.encodings, run_dir)
    if args.context_window:
        _stage2(args, model, encoded, report, device)
    metrics = {f"meld_{s}": meld_text_metrics(model, encoded[s], args.context_window, device) for s in ("dev", "test")}
    if model.config.text_past_lines:  # "single" read each line with its past lines; also each line alone
        for s in ("dev", "test"):
            alone = meld_text_metrics(model, encode_split(model, needed[s], device, alone=True), 0, device)
            metrics[f"meld_{s}"].update({key.replace("single", "alone"): m for key, m in alone.items()})
    if args.context_window and args.context_fit == "dev":
        # Fitted on dev: its dev scores are in-sample; the cross-validated one is in report.json (stage2).
        metrics["meld_dev"]["note"] = "context fitted on dev: dev context scores are in-sample"
        trained_on["context"] = (f"MELD dev ({len(dev)} lines, {args.context_window} previous lines of the dialogue; "
                                 f"{report['stage2']['options']['folds']}-fold CV by dialogue chose "
                                 f"{report['stage2']['best_epoch']} epochs)")  # fmt: skip
    elif args.context_window:
        trained_on["context"] = f"MELD train ({len(train)} lines; early stopping on dev)"
    if args.audio_from:
        model, audio_base, audio_trained_on = compose_with_audio(model, args.audio_from)
        trained_on.update(audio_trained_on)
    return _write(args, run_dir, model, metrics, report=report, trained_on=trained_on, audio_base=audio_base)


def _from_checkpoint(args: argparse.Namespace, report: dict[str, Any], device: torch.device,
                     ) -> tuple[FusionClassifier, dict[str, str], dict[str, str] | None]:  # fmt: skip
    """``--init-from``: any text checkpoint, this command's stage 1 or one of `train` (its audio branch is
    kept); with what it was trained on and its audio base model."""
    model = FusionClassifier.from_checkpoint(args.init_from, device=str(device))
    if not model.config.uses_text:
        raise CheckpointError(f"--init-from {args.init_from} has no text branch")
    meta = model.checkpoint_meta
    report["stage1"] = {"init_from": str(args.init_from), **meta.get("extra", {}).get("stage1", {})}
    audio_base = dict(meta.get("base_models", {}).get("audio", {})) or None
    return model, dict(meta.get("trained_on", {})), audio_base


def _extra_text(args: argparse.Namespace, cfg: TrainingConfig, base: Path) -> list[Any]:
    """``--extra-text``'s rows: GoEmotions train, single-label, at most ``--extra-per-class`` per label.

    Each comment is its own one-line dialogue by a known writer, so it is tagged ``S1`` (and, like a MELD
    line, sometimes ``S?``): were every extra row tagged unknown, the unknown tag, which a stream without
    speaker labels sends, would learn Reddit's label mix (MELD test with unknown speakers fell 2.5 points).
    """
    if not args.extra_text:
        return []
    from training.corpora import at_most_per_class, load_goemotions

    root = Path(cfg.data.goemotions_dir)
    rows = load_goemotions(root if root.is_absolute() else base / root, "train")
    return [dataclasses.replace(e, speaker="writer") for e in at_most_per_class(rows, args.extra_per_class, args.seed)]


def _stage1(args: argparse.Namespace, cfg: TrainingConfig, train: list[Any], extra: list[Any], dev: list[Any],
            report: dict[str, Any], device: torch.device) -> FusionClassifier:  # fmt: skip
    """Fine-tune every transformer layer + a linear head (the word embeddings stay frozen: most of the
    size, little gain) on MELD train + ``extra`` rows (which a teacher does not score)."""
    from transformers import AutoConfig

    name = args.text_encoder or cfg.model.text_encoder
    n_layers = int(AutoConfig.from_pretrained(resolve_text_encoder(name).path).num_hidden_layers)
    trainable = min(args.trainable_layers or n_layers, n_layers)
    mcfg = ModelConfig(labels=LABELS, mode="text", text_encoder=name, text_trainable_layers=trainable,
                       max_text_tokens=cfg.model.max_text_tokens, text_head="linear",
                       text_past_lines=args.past_lines)  # fmt: skip
    model = FusionClassifier(mcfg)
    teacher = None
    if args.distill_from:
        from training.distill import ensemble_logits, with_unscored

        teacher = with_unscored(ensemble_logits(args.distill_from, train, LABELS, device), len(extra))
    opts = TextBranchOptions(epochs=args.epochs, batch_size=args.batch_size, lr_encoder=args.lr_encoder,
                             lr_head=args.lr_head or args.lr_encoder, unknown_speaker_prob=args.unknown_speaker_prob,
                             seed=args.seed, distill_weight=args.distill_weight if teacher is not None else 0.0,
                             distill_temperature=args.distill_temperature)  # fmt: skip

    if args.lora_rank:
        add_lora(model.text_encoder, model.frozen_text_layers, args.lora_rank, args.lora_alpha)
    res = train_text_branch(model, [*train, *extra], dev, opts, device, teacher=teacher)
    if args.lora_rank:
        merge_lora(model.text_encoder)  # plain layers again: stored and run like a full fine-tune
    report["stage1"] = {"options": dataclasses.asdict(opts), "teacher": args.distill_from, "extra_rows": len(extra),
                        "lora_rank": args.lora_rank, "lora_alpha": args.lora_alpha,
                        "history": res.history,
                        "best_epoch": res.best_epoch, "seconds": round(res.seconds, 1)}  # fmt: skip
    return model


def _stage2(args: argparse.Namespace, model: FusionClassifier, encoded: dict[str, EncodedSplit],
            report: dict[str, Any], device: torch.device) -> None:  # fmt: skip
    """The context module on the cached encodings: fitted on train (early stopping on dev) or on dev (CV)."""
    copts = ContextOptions(window=args.context_window, epochs=args.context_epochs, seed=args.seed,
                           kind=args.context_kind, lr=args.context_lr)  # fmt: skip
    if args.context_fit == "dev":
        cres = train_context_cv(model, encoded["dev"], copts, device)
    else:
        cres = train_context(model, encoded["train"], encoded["dev"], copts, device)
    report["stage2"] = {"options": dataclasses.asdict(copts), "fit_on": args.context_fit, "history": cres.history,
                        "best_epoch": cres.best_epoch, "best_dev_weighted_f1": cres.best_dev_weighted_f1,
                        "seconds": round(cres.seconds, 1)}  # fmt: skip


def _storage(args: argparse.Namespace, model: FusionClassifier) -> dict[str, Any]:
    """How the checkpoint stores the trained encoder layers: ``--text-encoder-dtype`` for this command's
    own text branch (linear head), ``lowrank`` at the LoRA rank or at the rank of the ``--init-from``
    checkpoint; a ``train`` checkpoint's branch taken with ``--init-from`` stays float32. Keyword arguments
    of ``write_checkpoint``."""
    dtype = str(args.text_encoder_dtype) if model.config.text_head == "linear" else "float32"
    if dtype != "lowrank":
        return {"text_encoder_dtype": dtype, "text_delta_rank": 0}
    rank = args.lora_rank or int(model.checkpoint_meta.get("text_delta_rank") or 0)
    if rank < 1:
        raise ValueError(f"--text-encoder-dtype lowrank: --init-from {args.init_from} was not stored lowrank")
    return {"text_encoder_dtype": dtype, "text_delta_rank": rank}


def _write(args: argparse.Namespace, run_dir: Path, model: FusionClassifier, metrics: dict[str, Any], *,
           report: dict[str, Any], trained_on: dict[str, str], audio_base: dict[str, str] | None) -> int:  # fmt: skip
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    (run_dir / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    for mode, m in metrics["meld_test"].items():
        if mode == "note":
            continue
        plot_confusion(m["confusion"], LABELS, run_dir / f"confusion_meld_test_{mode}.png",
                       f"MELD test, text {mode}: weighted-F1 {m['weighted_f1']:.3f}")  # fmt: skip
    summary = {split: {mode: _summary(m) for mode, m in metrics[split].items() if mode != "note"}
               for split in ("meld_test", "meld_dev")}  # fmt: skip
    ckpt = model.save(run_dir / "model.pt", metrics=summary, trained_on=trained_on,
                      audio_model=audio_base,
                      extra={"run": run_dir.name, "command": report["command"], "stage1": report.get("stage1", {}),
                             "stage2": report.get("stage2", {})},
                      **_storage(args, model))  # fmt: skip
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_bytes(ckpt.read_bytes())
    print(f"run folder: {run_dir}")
    print(f"checkpoint: {args.out or ckpt} ({ckpt.stat().st_size / 1e6:.1f} MB)")
    for mode, m in metrics["meld_test"].items():
        print(f"meld_test {mode:26s} weighted-F1 {m['weighted_f1']:.4f}  macro-F1 {m['macro_f1']:.4f}  "
              f"accuracy {m['accuracy']:.4f}")  # fmt: skip
    return 0


def evaluate_text_context(model: FusionClassifier, meld_dir: Path, split: str, context: str, device: torch.device,
                          ) -> dict[str, Any]:  # fmt: skip
    """``evaluate`` on MELD for a linear-text-head checkpoint: tagged lines, with or without past context
    (the context module over cached encodings, and the past lines inside the input where the checkpoint
    reads them)."""
    if context == "past" and not hasattr(model, "context"):
        raise ValueError("--context past needs a checkpoint with a context module (emostream-train text)")
    exs = load_meld(meld_dir, split)
    # "none" reads each line alone, past lines in the input too: what the stream runs with context = false
    encoded = encode_split(model, exs, device, alone=context != "past")
    window = int(model.config.context.get("max_utterances", 0)) if context == "past" else 0
    known = classification_metrics(
        encoded.labels,
        predict_split(model, encoded, window=window, speakers=True, device=device).argmax(1),
        model.config.labels,
    )
    unknown = classification_metrics(
        encoded.labels,
        predict_split(model, encoded, window=window, speakers=False, device=device).argmax(1),
        model.config.labels,
    )
    known["unknown_speakers"] = {k: unknown[k] for k in ("weighted_f1", "macro_f1", "accuracy", "n")}
    known["context"] = context
    known["context_utterances"] = window
    return known
