"""Training and evaluating the past-context module over cached utterance encodings.

The fine-tuned text branch encodes every MELD line once (:func:`encode_split`); the context module
then trains in seconds on those cached vectors, with the encoder and text head frozen (exactly what a
stream has: cached encodings of the past lines). Windows hold only earlier lines of the same
dialogue (:func:`training.context.past_windows`).

Speakers: MELD names the speaker of every line; a stream has no speaker labels until a speaker stage
exists. Each line is therefore encoded twice, with its per-dialogue tag (``S1: ``) and with the
unknown tag (``S?: ``), and training shows a share of rows (``unknown_speaker_prob``) in the
unknown form (unknown tags, unknown relations), so one module serves both.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from training.context import RELATION_UNKNOWN, ContextConfig, ContextModule, PastContext, past_windows
from training.data import Example
from training.metrics import classification_metrics
from training.model import FusionClassifier
from training.text_branch import UNKNOWN_SPEAKER, conversation_order, dialogue_of, encode_pooled, speaker_tags, tagged

__all__ = ["ContextOptions", "EncodedSplit", "encode_split", "predict_split", "train_context"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EncodedSplit:
    """One split in conversation order: pooled encodings with true and with unknown speaker tags."""

    examples: tuple[Example, ...]
    known: torch.Tensor  # (N, W), "S1: text"
    unknown: torch.Tensor  # (N, W), "S?: text"
    labels: np.ndarray
    dialogues: tuple[str, ...]
    speakers: tuple[str, ...]


def encode_split(model: FusionClassifier, examples: Sequence[Example], device: torch.device,
                 *, batch_size: int = 64) -> EncodedSplit:  # fmt: skip
    """Encode ``examples`` (reordered into conversation order) with both tag forms."""
    order = conversation_order(examples)
    exs = tuple(examples[i] for i in order)
    if model.config.text_head != "linear":  # a text branch trained on untagged lines: one form
        known = unknown = encode_pooled(model, [str(e.text).strip() for e in exs], device, batch_size)
    else:
        tags = speaker_tags(exs)
        lines = [tagged(str(e.text), t) for e, t in zip(exs, tags, strict=True)]
        known = encode_pooled(model, lines, device, batch_size)
        unknown = encode_pooled(model, [tagged(str(e.text), UNKNOWN_SPEAKER) for e in exs], device, batch_size)
    return EncodedSplit(exs, known, unknown, np.array([e.label for e in exs]),
                        tuple(dialogue_of(e.uid) for e in exs), tuple(e.speaker for e in exs))  # fmt: skip


@dataclass(frozen=True, slots=True)
class ContextOptions:
    window: int = 8  # previous utterances of the dialogue read per line
    dim: int = 128
    dropout: float = 0.2
    epochs: int = 12
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    unknown_speaker_prob: float = 0.3
    seed: int = 1234


@dataclass(slots=True)
class ContextResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_dev_weighted_f1: float = -1.0
    seconds: float = 0.0


def _batch(split: EncodedSplit, windows: list[list[tuple[int, int]]], idx: Sequence[int], unknown: Sequence[bool],
           size: int) -> tuple[torch.Tensor, PastContext]:  # fmt: skip
    width = split.known.shape[1]
    cur = torch.stack([(split.unknown if u else split.known)[i] for i, u in zip(idx, unknown, strict=True)])
    rows = []
    for i, u in zip(idx, unknown, strict=True):
        src = split.unknown if u else split.known
        rows.append([(src[j], RELATION_UNKNOWN if u else r) for j, r in windows[i]])
    return cur, PastContext.stack(rows, width, size=size)


@torch.no_grad()
def predict_split(model: FusionClassifier, split: EncodedSplit, *, window: int, speakers: bool,
                  device: torch.device, batch_size: int = 256, module: bool = False) -> np.ndarray:  # fmt: skip
    """Logits for every line of ``split`` reading up to ``window`` previous lines (0 = no context);
    ``speakers=False`` is the stream without speaker labels (unknown tags and relations).
    ``module``: with ``window = 0``, still go through the context module (with an empty window)."""
    model.eval()
    windows = past_windows(split.dialogues, split.speakers, window)
    use_module = window > 0 or module
    out = []
    for s in range(0, len(split.examples), batch_size):
        idx = list(range(s, min(len(split.examples), s + batch_size)))
        cur, past = _batch(split, windows, idx, [not speakers] * len(idx), max(1, window))
        logits = model.text_logits(cur.to(device), past.to(device) if use_module else None)
        out.append(logits.float().cpu().numpy())
    return np.concatenate(out)


def split_metrics(model: FusionClassifier, split: EncodedSplit, **kwargs: Any) -> dict[str, Any]:
    logits = predict_split(model, split, **kwargs)
    return classification_metrics(split.labels, logits.argmax(1), model.config.labels)


def train_context(model: FusionClassifier, train: EncodedSplit, dev: EncodedSplit, opts: ContextOptions,
                  device: torch.device) -> ContextResult:  # fmt: skip
    """Add a context module to ``model`` (in place) and train it; encoder and text head stay frozen.

    The best epoch by dev weighted-F1 (with speaker tags) is kept."""
    cfg = ContextConfig(max_utterances=max(opts.window, 1), dim=opts.dim, dropout=opts.dropout)
    torch.manual_seed(opts.seed)
    rng = random.Random(opts.seed)
    width = int(train.known.shape[1])
    model.context = ContextModule(cfg, width, len(model.config.labels)).to(device)
    model.config = _with_context(model, cfg)
    for p in model.parameters():
        p.requires_grad_(False)
    params = list(model.context.parameters())
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=opts.lr, weight_decay=opts.weight_decay)
    windows = past_windows(train.dialogues, train.speakers, opts.window)
    labels = torch.from_numpy(train.labels)
    loss_fn = nn.CrossEntropyLoss()
    result = ContextResult()
    best: dict[str, torch.Tensor] | None = None
    started = time.monotonic()
    for epoch in range(1, opts.epochs + 1):
        model.eval()
        model.context.train()
        order = list(range(len(train.examples)))
        rng.shuffle(order)
        losses = []
        for s in range(0, len(order), opts.batch_size):
            idx = order[s : s + opts.batch_size]
            unknown = [rng.random() < opts.unknown_speaker_prob for _ in idx]
            cur, past = _batch(train, windows, idx, unknown, opts.window)
            logits = model.text_logits(cur.to(device), past.to(device))
            loss = loss_fn(logits, labels[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        known = split_metrics(model, dev, window=opts.window, speakers=True, device=device, module=True)
        unk = split_metrics(model, dev, window=opts.window, speakers=False, device=device, module=True)
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)), "dev_weighted_f1": known["weighted_f1"],
               "dev_weighted_f1_unknown_speakers": unk["weighted_f1"], "seconds": round(time.monotonic() - started, 1)}
        logger.info("context epoch %d: loss %.4f dev wF1 %.4f (unknown speakers %.4f)", epoch, row["train_loss"],
                    row["dev_weighted_f1"], row["dev_weighted_f1_unknown_speakers"])  # fmt: skip
        result.history.append(row)
        if known["weighted_f1"] > result.best_dev_weighted_f1:
            result.best_dev_weighted_f1, result.best_epoch = known["weighted_f1"], epoch
            best = {k: v.detach().clone() for k, v in model.context.state_dict().items()}
    if best is not None:
        model.context.load_state_dict(best)
    model.eval()
    result.seconds = time.monotonic() - started
    return result


def _with_context(model: FusionClassifier, cfg: ContextConfig) -> Any:
    import dataclasses

    return dataclasses.replace(model.config, context=cfg.to_dict())
