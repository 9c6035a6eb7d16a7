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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from training.context import RELATION_UNKNOWN, ContextConfig, ContextModule, PastContext, past_windows
from training.data import Example
from training.metrics import classification_metrics
from training.model import FusionClassifier
from training.text_branch import (
    UNKNOWN_SPEAKER,
    conversation_order,
    dialogue_of,
    dialogue_pasts,
    encode_pooled,
    speaker_tags,
    tagged,
)

__all__ = ["ContextOptions", "EncodedSplit", "encode_split", "predict_split", "train_context", "train_context_cv"]

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
                 *, batch_size: int = 64, alone: bool = False) -> EncodedSplit:  # fmt: skip
    """Encode ``examples`` (reordered into conversation order) with both tag forms. A text branch that reads
    past lines inside its input (``text_past_lines``) gets each line's dialogue past, in the same tag form,
    unless ``alone``."""
    order = conversation_order(examples)
    exs = tuple(examples[i] for i in order)
    k = 0 if alone else model.config.text_past_lines
    if model.config.text_head != "linear":  # a text branch trained on untagged lines: one form
        known = unknown = encode_pooled(model, [str(e.text).strip() for e in exs], device, batch_size)
    else:
        tags = speaker_tags(exs)
        lines = [tagged(str(e.text), t) for e, t in zip(exs, tags, strict=True)]
        known = encode_pooled(model, lines, device, batch_size, dialogue_pasts(exs, k) if k else None)
        unknown = encode_pooled(model, [tagged(str(e.text), UNKNOWN_SPEAKER) for e in exs], device, batch_size,
                                dialogue_pasts(exs, k, unknown=True) if k else None)  # fmt: skip
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
    kind: str = "attention"  # training.context.ContextConfig.kind
    folds: int = 5  # fit on dev: cross-validation folds (by dialogue) that choose the epoch count


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


def _attach(model: FusionClassifier, opts: ContextOptions, width: int, device: torch.device) -> list[nn.Parameter]:
    """A fresh context module on ``model``; everything else frozen. Returns the module's parameters."""
    cfg = ContextConfig(max_utterances=max(opts.window, 1), dim=opts.dim, dropout=opts.dropout, kind=opts.kind)
    model.context = ContextModule(cfg, width, len(model.config.labels)).to(device)
    model.config = _with_context(model, cfg)
    for p in model.parameters():
        p.requires_grad_(False)
    params = list(model.context.parameters())
    for p in params:
        p.requires_grad_(True)
    return params


def _epochs(model: FusionClassifier, split: EncodedSplit, opts: ContextOptions, epochs: int,
            device: torch.device) -> Iterator[tuple[int, float]]:  # fmt: skip
    """Train the attached module on ``split``; yields (epoch, mean loss) after each epoch."""
    torch.manual_seed(opts.seed)
    rng = random.Random(opts.seed)
    optimizer = torch.optim.AdamW(list(model.context.parameters()), lr=opts.lr, weight_decay=opts.weight_decay)
    windows = past_windows(split.dialogues, split.speakers, opts.window)
    labels = torch.from_numpy(split.labels)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(1, epochs + 1):
        model.eval()
        model.context.train()
        order = list(range(len(split.examples)))
        rng.shuffle(order)
        losses = []
        for s in range(0, len(order), opts.batch_size):
            idx = order[s : s + opts.batch_size]
            unknown = [rng.random() < opts.unknown_speaker_prob for _ in idx]
            cur, past = _batch(split, windows, idx, unknown, max(1, opts.window))
            loss = loss_fn(model.text_logits(cur.to(device), past.to(device)), labels[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        model.eval()
        yield epoch, float(np.mean(losses))


def train_context(model: FusionClassifier, train: EncodedSplit, dev: EncodedSplit, opts: ContextOptions,
                  device: torch.device) -> ContextResult:  # fmt: skip
    """Add a context module to ``model`` (in place) and train it on ``train``; encoder and text head
    stay frozen. The best epoch by dev weighted-F1 (with speaker tags) is kept."""
    _attach(model, opts, int(train.known.shape[1]), device)
    result = ContextResult()
    best: dict[str, torch.Tensor] | None = None
    started = time.monotonic()
    for epoch, loss in _epochs(model, train, opts, opts.epochs, device):
        known = split_metrics(model, dev, window=opts.window, speakers=True, device=device, module=True)
        unk = split_metrics(model, dev, window=opts.window, speakers=False, device=device, module=True)
        row = {
            "epoch": epoch,
            "train_loss": loss,
            "dev_weighted_f1": known["weighted_f1"],
            "dev_weighted_f1_unknown_speakers": unk["weighted_f1"],
            "seconds": round(time.monotonic() - started, 1),
        }
        logger.info("context epoch %d: loss %.4f dev wF1 %.4f (unknown speakers %.4f)", epoch, loss,
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


def _subset(split: EncodedSplit, idx: Sequence[int]) -> EncodedSplit:
    rows = list(idx)
    return EncodedSplit(tuple(split.examples[i] for i in rows), split.known[rows], split.unknown[rows],
                        split.labels[rows], tuple(split.dialogues[i] for i in rows),
                        tuple(split.speakers[i] for i in rows))  # fmt: skip


def train_context_cv(model: FusionClassifier, dev: EncodedSplit, opts: ContextOptions,
                     device: torch.device) -> ContextResult:  # fmt: skip
    """Fit the context module on dev lines, which the text branch never trained on, so their
    encodings are as (un)sure as a stream's; the training lines' encodings are overconfident.

    ``opts.folds``-fold cross-validation by dialogue picks the epoch count by out-of-fold weighted-F1
    (``best_dev_weighted_f1`` is that out-of-fold score); the module is then fitted on all of dev."""
    dialogues = sorted(set(dev.dialogues))
    random.Random(opts.seed).shuffle(dialogues)
    folds = [set(dialogues[k :: opts.folds]) for k in range(opts.folds)]
    labels = model.config.labels
    oof = np.zeros((opts.epochs, len(dev.examples), len(labels)), dtype=np.float32)
    started = time.monotonic()
    # Every fold and the final fit attach a fresh module, so a module the model came with (e.g. --init-from,
    # perhaps of another window) is not part of what is put back.
    state = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("context.")}
    for fold in folds:
        held = [i for i, d in enumerate(dev.dialogues) if d in fold]
        fit = _subset(dev, [i for i, d in enumerate(dev.dialogues) if d not in fold])
        _attach(model, opts, int(dev.known.shape[1]), device)
        for epoch, _ in _epochs(model, fit, opts, opts.epochs, device):
            oof[epoch - 1, held] = predict_split(model, _subset(dev, held), window=opts.window, speakers=True,
                                                 device=device, module=True)  # fmt: skip
    result = ContextResult()
    for e in range(opts.epochs):
        m = classification_metrics(dev.labels, oof[e].argmax(1), labels)
        result.history.append({"epoch": e + 1, "dev_oof_weighted_f1": m["weighted_f1"],
                               "dev_oof_macro_f1": m["macro_f1"]})  # fmt: skip
        if m["weighted_f1"] > result.best_dev_weighted_f1:
            result.best_dev_weighted_f1, result.best_epoch = m["weighted_f1"], e + 1
    logger.info("context (fit on dev): %d-fold out-of-fold weighted-F1 by epoch %s; %d epochs chosen", opts.folds,
                [round(h["dev_oof_weighted_f1"], 4) for h in result.history], result.best_epoch)  # fmt: skip
    model.load_state_dict(state, strict=False)
    _attach(model, opts, int(dev.known.shape[1]), device)
    for _ in _epochs(model, dev, opts, result.best_epoch, device):
        pass
    result.seconds = time.monotonic() - started
    return result


def _with_context(model: FusionClassifier, cfg: ContextConfig) -> Any:
    import dataclasses

    return dataclasses.replace(model.config, context=cfg.to_dict())
