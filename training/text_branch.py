"""The text branch on its own: a fully fine-tuned sentence encoder with a linear head, on MELD lines.

What it does differently from the joint ``train`` path, and why (issue 12's probes):

* every transformer layer is trained (the word-embedding table stays frozen: it is 47 MB of the
  MiniLM's 91 MB and barely moves), and the checkpoint stores those layers as float16, < 25 MB;
* plain cross-entropy (class weighting cost weighted-F1), one-cycle learning rate;
* each line is prefixed with its speaker's per-dialogue tag (``S1: ``, ``S2: `` ... in order of first
  appearance, as a stream's speaker stage numbers its speakers). A fraction of training lines get
  the unknown-speaker tag ``S?: ``, which is what a stream without speaker labels sends;
* batches of similar length (dynamic padding), so an epoch costs about what its tokens cost.

:func:`speaker_tags` and :func:`tagged` are the one place the tag format lives; the stream uses them.
"""

from __future__ import annotations

import logging
import math
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from training.data import Example
from training.metrics import classification_metrics
from training.model import FusionClassifier

__all__ = [
    "UNKNOWN_SPEAKER",
    "TextBranchOptions",
    "conversation_order",
    "dialogue_of",
    "encode_pooled",
    "speaker_tags",
    "tagged",
    "train_text_branch",
]

logger = logging.getLogger(__name__)

UNKNOWN_SPEAKER = "S?"
_UID = re.compile(r"^(?P<dia>.*dia(?P<d>\d+))_utt(?P<u>\d+)$")


def dialogue_of(uid: str) -> str:
    """``meld/train/dia3_utt4`` -> ``meld/train/dia3``; a uid of another form is its own dialogue."""
    m = _UID.match(uid)
    return m.group("dia") if m else uid


def conversation_order(examples: Sequence[Example]) -> list[int]:
    """Row indices sorted by (dialogue, utterance number): the order the lines were spoken in."""

    def key(i: int) -> tuple[str, int, int, str]:
        uid = examples[i].uid
        m = _UID.match(uid)
        if not m:
            return (uid, 0, 0, uid)
        return (uid[: m.start("d")], int(m.group("d")), int(m.group("u")), uid)

    return sorted(range(len(examples)), key=key)


def speaker_tags(examples: Sequence[Example]) -> list[str]:
    """Per-dialogue speaker tags ``S1``, ``S2`` ... by order of first appearance (rows taken in
    conversation order); rows without a speaker get :data:`UNKNOWN_SPEAKER`."""
    tags = [UNKNOWN_SPEAKER] * len(examples)
    seen: dict[str, dict[str, str]] = {}
    for i in conversation_order(examples):
        ex = examples[i]
        if not ex.speaker:
            continue
        names = seen.setdefault(dialogue_of(ex.uid), {})
        tags[i] = names.setdefault(ex.speaker, f"S{len(names) + 1}")
    return tags


def tagged(text: str, tag: str) -> str:
    """The line as the text branch reads it: ``"S1: text"``."""
    return f"{tag}: {text.strip()}"


@dataclass(frozen=True, slots=True)
class TextBranchOptions:
    epochs: int = 3
    batch_size: int = 32
    lr_encoder: float = 8e-5
    lr_head: float = 8e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1  # one-cycle: linear warm-up over this share of steps, then cosine to 0
    unknown_speaker_prob: float = 0.2  # training lines shown with the unknown-speaker tag
    seed: int = 1234
    max_steps_per_epoch: int = 0  # 0 = all (tests use a few)
    eval_batch_size: int = 64


@dataclass(slots=True)
class TextBranchResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_dev_weighted_f1: float = -1.0
    seconds: float = 0.0


def _length_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of rows of similar length (sorted within chunks of 50 batches)."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * 50
    batches: list[list[int]] = []
    for s in range(0, len(order), chunk):
        part = sorted(order[s : s + chunk], key=lambda i: lengths[i])
        batches += [part[j : j + batch_size] for j in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


@torch.no_grad()
def encode_pooled(model: FusionClassifier, texts: Sequence[str], device: torch.device, batch_size: int = 64,
                  ) -> torch.Tensor:  # fmt: skip
    """Pooled encoder outputs ``(N, width)`` for the already tagged ``texts`` (eval mode, in order)."""
    model.eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.zeros(len(texts), int(model.text_encoder.config.hidden_size))
    started = time.monotonic()
    for k, s in enumerate(range(0, len(order), batch_size)):
        idx = order[s : s + batch_size]
        enc = model.tokenize([texts[i] for i in idx], device)
        out[idx] = model.pool_text(enc["input_ids"], enc["attention_mask"]).float().cpu()
        if k % 50 == 49:
            logger.info("encoded %d of %d lines (%.0f s)", s + len(idx), len(texts), time.monotonic() - started)
    return out


def evaluate_texts(model: FusionClassifier, texts: Sequence[str], labels: np.ndarray, device: torch.device,
                   batch_size: int = 64) -> dict[str, Any]:  # fmt: skip
    pooled = encode_pooled(model, texts, device, batch_size)
    with torch.no_grad():
        pred = model.text_logits(pooled.to(device)).argmax(-1).cpu().numpy()
    return classification_metrics(labels, pred, model.config.labels)


def train_text_branch(
    model: FusionClassifier,
    train: Sequence[Example],
    dev: Sequence[Example],
    opts: TextBranchOptions,
    device: torch.device,
    *,
    on_epoch: Callable[[dict[str, Any], FusionClassifier], None] | None = None,
) -> TextBranchResult:
    """Fine-tune ``model``'s encoder + text head in place; returns with the best dev epoch's weights."""
    if model.config.text_head != "linear":
        raise ValueError("train_text_branch needs a model with text_head = 'linear'")
    random.seed(opts.seed)
    torch.manual_seed(opts.seed)
    rng = random.Random(opts.seed)
    model.to(device)
    rows = [i for i, e in enumerate(train) if e.text and e.text.strip()]
    tags = speaker_tags(train)
    labels = torch.tensor([e.label for e in train])
    lengths = [len(str(train[i].text)) for i in rows]
    dev_texts = [tagged(str(e.text), t) for e, t in zip(dev, speaker_tags(dev), strict=True)]
    dev_labels = np.array([e.label for e in dev])

    enc_params = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("text_encoder.")]
    head_params = list(model.text_head.parameters())
    optimizer = torch.optim.AdamW(
        [{"params": enc_params, "lr": opts.lr_encoder}, {"params": head_params, "lr": opts.lr_head}],
        weight_decay=opts.weight_decay,
    )
    per_epoch = math.ceil(len(rows) / opts.batch_size)
    if opts.max_steps_per_epoch:
        per_epoch = min(per_epoch, opts.max_steps_per_epoch)
    total = max(1, per_epoch * opts.epochs)
    warmup = max(1, int(total * opts.warmup_ratio))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    loss_fn = nn.CrossEntropyLoss()
    result = TextBranchResult()
    best: dict[str, torch.Tensor] | None = None
    started = time.monotonic()
    for epoch in range(1, opts.epochs + 1):
        model.train()
        batches = _length_batches(lengths, opts.batch_size, rng)[:per_epoch]
        losses: list[float] = []
        for step, batch in enumerate(batches):
            idx = [rows[b] for b in batch]
            texts = [
                tagged(str(train[i].text), UNKNOWN_SPEAKER if rng.random() < opts.unknown_speaker_prob else tags[i])
                for i in idx
            ]
            enc = model.tokenize(texts, device)
            logits = model.text_logits(model.pool_text(enc["input_ids"], enc["attention_mask"]))
            loss = loss_fn(logits.float(), labels[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(enc_params + head_params, 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            if step % 50 == 0:
                logger.info("epoch %d step %d/%d loss %.4f (%.0f s)", epoch, step, len(batches),
                            float(np.mean(losses[-50:])), time.monotonic() - started)  # fmt: skip
        metrics = evaluate_texts(model, dev_texts, dev_labels, device, opts.eval_batch_size)
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan"),
               "dev_weighted_f1": metrics["weighted_f1"], "dev_macro_f1": metrics["macro_f1"],
               "seconds": round(time.monotonic() - started, 1)}  # fmt: skip
        logger.info("epoch %d: loss %.4f dev weighted-F1 %.4f macro-F1 %.4f (%.0f s)", epoch, row["train_loss"],
                    row["dev_weighted_f1"], row["dev_macro_f1"], row["seconds"])  # fmt: skip
        result.history.append(row)
        if on_epoch:
            on_epoch(row, model)
        if metrics["weighted_f1"] > result.best_dev_weighted_f1:
            result.best_dev_weighted_f1, result.best_epoch = metrics["weighted_f1"], epoch
            best = model.trained_state_dict()
    if best is not None:
        model.load_state_dict(best, strict=False)
    model.eval()
    result.seconds = time.monotonic() - started
    return result
