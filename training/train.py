"""The training loop: class-weighted loss, AdamW with warmup, early stopping on dev weighted-F1.

Data enter as :class:`training.batches.Dataset` (examples + aligned audio feature vectors), batched by
:mod:`training.batches`. Modality dropout hides one branch of a row that has both. When the two
modalities come from different corpora (text from MELD, audio from RAVDESS/EmoDB), the smaller audio
set is repeated within an epoch (``audio_oversample``) so that the audio branch sees enough updates.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from training.batches import Dataset, batch_inputs, epoch_order, row_modalities, usable_rows
from training.distributed import Dist
from training.metrics import TrainingDiverged, classification_metrics, collapsed_to
from training.model import FusionClassifier

__all__ = [
    "FitResult",
    "TrainOptions",
    "evaluate",
    "fit",
    "predict_logits",
    "seed_everything",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TrainOptions:
    epochs: int = 6
    batch_size: int = 32
    lr_encoder: float = 5e-5
    lr_head: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    patience_epochs: int = 2
    class_weighted_loss: bool = True
    class_weight_power: float = 0.5  # weights (N / (K * n_c)) ** power; 1 = fully balanced
    modality_dropout: float = 0.3
    audio_oversample: int = 0  # 0 = auto (audio rows ~ half the text rows per epoch); 1 = none
    seed: int = 1234
    max_steps_per_epoch: int = 0  # 0 = all (tests use a few)
    progress: bool = True


@dataclass(slots=True)
class FitResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = -1.0
    seconds: float = 0.0


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch; ask torch for deterministic kernels where it has them."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = False


def class_weights(labels: np.ndarray, n_classes: int, power: float) -> torch.Tensor:
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, (counts.sum() / (n_classes * np.maximum(counts, 1))) ** power, 0.0)
    w = w / w[counts > 0].mean()
    return torch.tensor(w, dtype=torch.float32)


def _autocast(device: torch.device) -> Any:
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", enabled=False)


@torch.no_grad()
def predict_logits(model: FusionClassifier, data: Dataset, device: torch.device, batch_size: int = 64) -> np.ndarray:
    """Logits for every usable row of ``data``, in order (rows the model cannot see are NaN)."""
    model.eval()
    out = np.full((len(data), len(model.config.labels)), np.nan, dtype=np.float32)
    rows = usable_rows(model, data)
    for s in range(0, len(rows), batch_size):
        idx = rows[s : s + batch_size]
        with _autocast(device):
            logits = model(**batch_inputs(model, data, idx, device))
        out[idx] = logits.float().cpu().numpy()
    return out


def evaluate(model: FusionClassifier, data: Dataset, device: torch.device, batch_size: int = 64) -> dict[str, Any]:
    """Metrics (weighted/macro F1, accuracy, per class, confusion) over the rows the model can see."""
    logits = predict_logits(model, data, device, batch_size)
    seen = ~np.isnan(logits).any(axis=1)
    y_true = data.labels[seen]
    y_pred = logits[seen].argmax(axis=1)
    metrics = classification_metrics(y_true, y_pred, model.config.labels)
    metrics["skipped"] = int((~seen).sum())
    return metrics


def fit(
    model: FusionClassifier,
    train: Dataset,
    dev: Sequence[Dataset],
    opts: TrainOptions,
    device: torch.device,
    *,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    dist: Dist | None = None,
) -> FitResult:
    """Train in place; on return ``model`` holds the weights of the best dev epoch.

    ``dist`` (under ``torchrun``, see :mod:`training.distributed`): every process takes the same
    global batches and runs its share of each; gradients are averaged by DDP.
    """
    dist = dist or Dist()
    seed_everything(opts.seed)
    rng = random.Random(opts.seed)
    model.to(device)
    loop = _Loop.start(model, train, opts, device, dist)
    result = FitResult()
    best_state: dict[str, torch.Tensor] | None = None
    stale = 0
    started = time.monotonic()
    for epoch in range(1, opts.epochs + 1):
        losses = loop.epoch(epoch, rng)
        row: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            "step_losses": losses,
        }
        scores = _score_dev(model, dev, device, opts.batch_size * 2, row)
        score = float(np.mean(scores)) if scores else -row["train_loss"]
        row["score"] = score
        row["seconds"] = time.monotonic() - started
        result.history.append(row)
        logger.info(
            "epoch %d: loss %.4f, dev %s",
            epoch,
            row["train_loss"],
            ", ".join(f"{k}={v:.4f}" for k, v in row.items() if k.endswith("weighted_f1")),
        )
        if on_epoch:
            on_epoch(row)
        if score > result.best_score:
            result.best_score, result.best_epoch = score, epoch
            best_state = model.trained_state_dict()
            stale = 0
        else:
            stale += 1
            if stale >= opts.patience_epochs:
                logger.info("early stopping after epoch %d (best epoch %d)", epoch, result.best_epoch)
                break
    _check_not_collapsed(result)
    if best_state is not None:
        model.load_state_dict(best_state, strict=False)
    model.eval()
    result.seconds = time.monotonic() - started
    return result


def _score_dev(
    model: FusionClassifier, dev: Sequence[Dataset], device: torch.device, batch_size: int, row: dict[str, Any]
) -> list[float]:
    """Each usable dev set's weighted F1 (also written into the epoch's ``row`` with its accuracy)."""
    scores = []
    for d in dev:
        if not usable_rows(model, d):
            continue
        m = evaluate(model, d, device, batch_size)
        row[f"{d.name}_weighted_f1"] = m["weighted_f1"]
        row[f"{d.name}_accuracy"] = m["accuracy"]
        one_label = collapsed_to(m)
        if one_label:
            row[f"{d.name}_collapsed_to"] = one_label
            logger.warning("epoch %d gives every %s dev row %r: not learning yet, or diverged", row["epoch"], d.name,
                           one_label)  # fmt: skip
        scores.append(m["weighted_f1"])
    row["dev_sets"] = len(scores)
    return scores


def _check_not_collapsed(result: FitResult) -> None:
    """Raise :class:`TrainingDiverged` when the best epoch gave one label to every row of every dev set."""
    if not result.best_epoch:
        return
    row = result.history[result.best_epoch - 1]
    collapsed = {k.removesuffix("_collapsed_to"): v for k, v in row.items() if k.endswith("_collapsed_to")}
    if collapsed and len(collapsed) == row.get("dev_sets"):
        sets = ", ".join(f"{name} -> {label!r}" for name, label in collapsed.items())
        raise TrainingDiverged(
            f"training did not learn: its best epoch ({result.best_epoch}) gives every dev row one label ({sets}); "
            "lower the learning rates (--lr-encoder, --lr-head) or try another --seed"
        )


@dataclass(slots=True)
class _Loop:
    """What the optimisation steps of one :func:`fit` share: the (DDP-wrapped) net, loss, optimiser."""

    model: FusionClassifier
    net: nn.Module
    train: Dataset
    opts: TrainOptions
    device: torch.device
    dist: Dist
    weights: torch.Tensor | None
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    params: list[torch.Tensor]
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    per_epoch: int

    @classmethod
    def start(
        cls, model: FusionClassifier, train: Dataset, opts: TrainOptions, device: torch.device, dist: Dist
    ) -> _Loop:
        net: nn.Module = model
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            # Branches a share does not use (no audio rows, say) get no gradient there: DDP must look.
            net = DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
            )
        n_labels = len(model.config.labels)
        weights = class_weights(train.labels, n_labels, opts.class_weight_power) if opts.class_weighted_loss else None
        # Summed per row, normalised by the whole global batch's weight below (exact under DDP too).
        loss_fn = nn.CrossEntropyLoss(weight=None if weights is None else weights.to(device), reduction="sum")
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        enc_params = [p for n, p in trainable if n.startswith("text_encoder.")]
        head_params = [p for n, p in trainable if not n.startswith("text_encoder.")]
        groups: list[dict[str, Any]] = [{"params": head_params, "lr": opts.lr_head}]
        if enc_params:
            groups.append({"params": enc_params, "lr": opts.lr_encoder})
        optimizer = torch.optim.AdamW(groups, weight_decay=opts.weight_decay)
        per_epoch = math.ceil(len(epoch_order(model, train, opts.audio_oversample, random.Random(0))) / opts.batch_size)
        if opts.max_steps_per_epoch:
            per_epoch = min(per_epoch, opts.max_steps_per_epoch)
        scheduler = _warmup_linear(optimizer, max(1, per_epoch * opts.epochs), opts.warmup_ratio)
        scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and not torch.cuda.is_bf16_supported())
        params = [p for g in groups for p in g["params"]]
        return cls(
            model=model, net=net, train=train, opts=opts, device=device, dist=dist, weights=weights,
            loss_fn=loss_fn, optimizer=optimizer, params=params, scheduler=scheduler, scaler=scaler,
            per_epoch=per_epoch,
        )  # fmt: skip

    def epoch(self, epoch: int, rng: random.Random) -> list[float]:
        """One epoch's steps; returns each step's loss (of the whole global batch)."""
        self.model.train()
        order = epoch_order(self.model, self.train, self.opts.audio_oversample, rng)
        size = self.opts.batch_size
        steps = [order[s : s + size] for s in range(0, len(order), size)][: self.per_epoch]
        if self.dist.enabled:
            # A process with no rows could not take part in the gradient exchange: skip such a tail batch.
            steps = [s for s in steps if len(s) >= self.dist.world]
        losses: list[float] = []
        bar = tqdm(steps, desc=f"epoch {epoch}/{self.opts.epochs}",
                   disable=not (self.opts.progress and self.dist.is_main), leave=False)  # fmt: skip
        for idx in bar:
            losses.append(self.step(idx, rng))
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
        return losses

    def step(self, idx: list[int], rng: random.Random) -> float:
        """One optimisation step on the global batch ``idx`` (this process runs its share)."""
        model, train, dist, device, weights = self.model, self.train, self.dist, self.device, self.weights
        # Drawn for the whole global batch, so every process (and a single-process run) agrees.
        mods = row_modalities(model, train, idx, modality_dropout=self.opts.modality_dropout, rng=rng)
        labels = [train.examples[i].label for i in idx]
        norm = float(sum(weights[y] for y in labels)) if weights is not None else float(len(idx))
        mine = slice(dist.rank, None, dist.world)
        kwargs = batch_inputs(model, train, idx[mine], device, modalities=mods[mine])
        target = torch.tensor(labels[mine], device=device)
        with _autocast(device):
            logits = self.net(**kwargs)
        # DDP averages gradients over processes: scale by the world size to get the batch's sum / norm.
        loss = self.loss_fn(logits.float(), target) * (dist.world / norm)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        nn.utils.clip_grad_norm_(self.params, 1.0)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        batch_loss = loss.detach() / dist.world  # this share's part of the global batch's loss
        if dist.enabled:
            torch.distributed.all_reduce(batch_loss)
        return float(batch_loss)


def _warmup_linear(
    optimizer: torch.optim.Optimizer, total: int, warmup_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_ratio`` of the ``total`` steps, then linear decay to 0."""
    warmup = int(total * warmup_ratio)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
