"""The text branch on its own: a fully fine-tuned sentence encoder with a linear head, on MELD lines.

What it does differently from the joint ``train`` path, and why (issue 12's probes):

* every transformer layer is trained (the word-embedding table stays frozen: it is 47 MB of the
  MiniLM's 91 MB and barely moves), and the checkpoint stores those layers as float16, < 25 MB;
  or, for a larger encoder, only its top layers: the output of the frozen ones is computed once per
  line and cached (:mod:`training.text_split`), so an epoch costs what the top layers cost;
* plain cross-entropy (class weighting cost weighted-F1), one-cycle learning rate;
* each line is prefixed with its speaker's per-dialogue tag (``S1: ``, ``S2: `` ... in order of first
  appearance, as a stream's speaker stage numbers its speakers). A fraction of training lines get
  the unknown-speaker tag ``S?: ``, which is what a stream without speaker labels sends;
* batches of similar length (dynamic padding), so an epoch costs about what its tokens cost;
* optionally distilled: with a teacher's logits for every training line (:mod:`training.distill`), the
  loss mixes cross-entropy on the label with the KL to the teacher's softened distribution. A line the
  teacher did not score (its row is NaN: extra data such as GoEmotions) learns from its label alone.

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
import torch.nn.functional as F
from torch import nn

from training.data import Example
from training.metrics import TrainingDiverged, classification_metrics, collapsed_to
from training.model import FusionClassifier
from training.text_split import LowerCache

__all__ = [
    "UNKNOWN_SPEAKER",
    "TextBranchOptions",
    "both_past_forms",
    "both_tag_forms",
    "conversation_order",
    "dialogue_of",
    "dialogue_pasts",
    "distill_loss",
    "encode_pooled",
    "past_segment",
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


def past_segment(lines: Sequence[tuple[str | None, str]], k: int) -> str:
    """The past a line is read with (``text_past_lines``): its ``k`` latest previous lines, oldest first,
    each tagged (``None`` = :data:`UNKNOWN_SPEAKER`) and joined by a space; "" without any."""
    if k <= 0:
        return ""
    return " ".join(tagged(text, tag or UNKNOWN_SPEAKER) for tag, text in list(lines)[-k:])


def dialogue_pasts(examples: Sequence[Example], k: int, *, unknown: bool = False) -> list[str]:
    """:func:`past_segment` of every row (indexed as ``examples``) from the earlier lines of its dialogue,
    tagged as :func:`speaker_tags` numbers them, or all :data:`UNKNOWN_SPEAKER` with ``unknown``."""
    tags = speaker_tags(examples)
    out = [""] * len(examples)
    history: dict[str, list[tuple[str | None, str]]] = {}
    for i in conversation_order(examples):
        earlier = history.setdefault(dialogue_of(examples[i].uid), [])
        out[i] = past_segment(earlier, k)
        earlier.append((None if unknown else tags[i], str(examples[i].text or "")))
    return out


def both_tag_forms(examples: Sequence[Example]) -> list[str]:
    """Every line in the two forms training shows it, indexed as training indexes them: rows ``0..N-1``
    with the speaker's per-dialogue tag, ``N..2N-1`` with the unknown-speaker tag (the frozen layers'
    cache and a teacher's logits both use this order)."""
    tags = speaker_tags(examples)
    texts = [tagged(str(e.text or ""), t) for e, t in zip(examples, tags, strict=True)]
    return texts + [tagged(str(e.text or ""), UNKNOWN_SPEAKER) for e in examples]


def both_past_forms(examples: Sequence[Example], k: int) -> list[str]:
    """Every line's :func:`dialogue_pasts` (``k`` lines) indexed as :func:`both_tag_forms`: rows ``0..N-1``
    tagged with the speakers' per-dialogue tags, ``N..2N-1`` all with the unknown-speaker tag."""
    return [*dialogue_pasts(examples, k), *dialogue_pasts(examples, k, unknown=True)]


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
    distill_weight: float = 0.0  # share of the loss from the teacher's soft labels (needs teacher logits)
    distill_temperature: float = 2.0


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
                  pasts: Sequence[str] | None = None) -> torch.Tensor:  # fmt: skip
    """Pooled encoder outputs ``(N, width)`` for the already tagged ``texts`` (eval mode, in order),
    each read with its ``pasts`` entry when given (:meth:`FusionClassifier.tokenize`)."""
    model.eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]) + (len(pasts[i]) if pasts else 0))
    out = torch.zeros(len(texts), int(model.text_encoder.config.hidden_size))
    started = time.monotonic()
    for k, s in enumerate(range(0, len(order), batch_size)):
        idx = order[s : s + batch_size]
        enc = model.tokenize([texts[i] for i in idx], device, None if pasts is None else [pasts[i] for i in idx])
        out[idx] = model.pool_text(**enc).float().cpu()
        if k % 50 == 49:
            logger.info("encoded %d of %d lines (%.0f s)", s + len(idx), len(texts), time.monotonic() - started)
    return out


def evaluate_texts(model: FusionClassifier, texts: Sequence[str], labels: np.ndarray, device: torch.device,
                   batch_size: int = 64, pasts: Sequence[str] | None = None) -> dict[str, Any]:  # fmt: skip
    pooled = encode_pooled(model, texts, device, batch_size, pasts)
    with torch.no_grad():
        pred = model.text_logits(pooled.to(device)).argmax(-1).cpu().numpy()
    return classification_metrics(labels, pred, model.config.labels)


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float, *, per_row: bool = False,
                 ) -> torch.Tensor:  # fmt: skip
    """KL(teacher || student) between distributions softened by ``temperature``, times ``temperature**2``
    (Hinton et al.: the gradients keep their size whatever the temperature); averaged over the rows, or
    one value per row with ``per_row``."""
    t = float(temperature)
    log_p = F.log_softmax(student.float() / t, dim=-1)
    log_q = F.log_softmax(teacher.float() / t, dim=-1)
    kl = F.kl_div(log_p, log_q, log_target=True, reduction="none").sum(dim=-1) * (t * t)
    return kl if per_row else kl.mean()


def _one_cycle(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_ratio`` of the steps, then a cosine down to 0."""
    total = max(1, total_steps)
    warmup = max(1, int(total * warmup_ratio))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


class _TextLoop:
    """The training side of :func:`train_text_branch`: rows, tags, optimizer, schedule, one epoch at a time."""

    def __init__(self, model: FusionClassifier, train: Sequence[Example], opts: TextBranchOptions,
                 device: torch.device, teacher: torch.Tensor | None) -> None:  # fmt: skip
        self.model, self.train, self.opts, self.device = model, train, opts, device
        self.teacher = teacher
        self.rng = random.Random(opts.seed)
        self.rows = [i for i, e in enumerate(train) if e.text and e.text.strip()]
        self.tags = speaker_tags(train)
        self.labels = torch.tensor([e.label for e in train])
        k = model.config.text_past_lines
        if k and model.frozen_text_layers:
            raise ValueError("past lines in the encoder's input need every layer trained: the cache of frozen "
                             "layers holds lines read alone (--trainable-layers)")  # fmt: skip
        self.pasts = both_past_forms(train, k) if k else None  # indexed like the both-forms rows of _step
        self.lengths = [len(str(train[i].text)) + (len(self.pasts[i]) if self.pasts else 0) for i in self.rows]
        self.cache = self._lower_cache() if model.frozen_text_layers else None
        enc_params = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("text_encoder.")]
        head_params = list(model.text_head.parameters())
        self.params = enc_params + head_params
        self.optimizer = torch.optim.AdamW(
            [{"params": enc_params, "lr": opts.lr_encoder}, {"params": head_params, "lr": opts.lr_head}],
            weight_decay=opts.weight_decay,
        )
        self.per_epoch = math.ceil(len(self.rows) / opts.batch_size)
        if opts.max_steps_per_epoch:
            self.per_epoch = min(self.per_epoch, opts.max_steps_per_epoch)
        self.scheduler = _one_cycle(self.optimizer, self.per_epoch * opts.epochs, opts.warmup_ratio)
        self.loss_fn = nn.CrossEntropyLoss()
        self.started = time.monotonic()

    def _lower_cache(self) -> LowerCache:
        """The frozen layers' output for every training line in both tag forms (:func:`both_tag_forms`)."""
        texts = both_tag_forms(self.train)
        logger.info("caching the output of the %d frozen encoder layers for %d lines", self.model.frozen_text_layers,
                    len(texts))  # fmt: skip
        return LowerCache.build(self.model.text_encoder, self.model.tokenize, texts, self.model.frozen_text_layers,
                                self.device)  # fmt: skip

    def epoch(self, epoch: int) -> list[float]:
        """One pass over length-bucketed batches; the losses of its steps."""
        self.model.train()
        batches = _length_batches(self.lengths, self.opts.batch_size, self.rng)[: self.per_epoch]
        losses: list[float] = []
        for step, batch in enumerate(batches):
            losses.append(self._step([self.rows[b] for b in batch]))
            if step % 50 == 0:
                logger.info("epoch %d step %d/%d loss %.4f (%.0f s)", epoch, step, len(batches),
                            float(np.mean(losses[-50:])), time.monotonic() - self.started)  # fmt: skip
        return losses

    def _distilled_loss(self, logits: torch.Tensor, idx: list[int], rows: list[int]) -> torch.Tensor:
        """Per line: (1 - w) x cross-entropy + w x KL to the teacher; a line the teacher did not score
        (NaN row) gets its cross-entropy alone."""
        assert self.teacher is not None
        w, t = self.opts.distill_weight, self.opts.distill_temperature
        ce = F.cross_entropy(logits.float(), self.labels[idx].to(self.device), reduction="none")
        soft = self.teacher[rows].to(self.device)
        scored = ~torch.isnan(soft).any(dim=1)
        loss = ce.clone()
        if bool(scored.any()):
            kl = distill_loss(logits[scored], soft[scored], t, per_row=True)
            loss[scored] = (1.0 - w) * ce[scored] + w * kl
        return loss.mean()

    def _step(self, idx: list[int]) -> float:
        opts, model = self.opts, self.model
        unknown = [self.rng.random() < opts.unknown_speaker_prob for _ in idx]
        rows = [i + len(self.train) * u for i, u in zip(idx, unknown, strict=True)]  # both-forms row index
        if self.cache is not None:
            lower, mask = self.cache.batch(rows, self.device)
            pooled = model.pool_upper(lower, mask)
        else:
            texts = [tagged(str(self.train[i].text), UNKNOWN_SPEAKER if u else self.tags[i])
                     for i, u in zip(idx, unknown, strict=True)]  # fmt: skip
            pasts = None if self.pasts is None else [self.pasts[r] for r in rows]
            enc = model.tokenize(texts, self.device, pasts)
            pooled = model.pool_text(**enc)
        logits = model.text_logits(pooled)
        if self.teacher is not None and opts.distill_weight > 0:
            loss = self._distilled_loss(logits, idx, rows)
        else:
            loss = self.loss_fn(logits.float(), self.labels[idx].to(self.device))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach())


def train_text_branch(
    model: FusionClassifier,
    train: Sequence[Example],
    dev: Sequence[Example],
    opts: TextBranchOptions,
    device: torch.device,
    *,
    on_epoch: Callable[[dict[str, Any], FusionClassifier], None] | None = None,
    teacher: torch.Tensor | None = None,
) -> TextBranchResult:
    """Fine-tune ``model``'s encoder + text head in place; returns with the best dev epoch's weights.

    ``teacher``: a teacher's logits for every training line in both tag forms, ``(2 * len(train), C)``
    (:func:`training.distill.teacher_logits`), mixed into the loss by ``opts.distill_weight``; NaN rows
    mark lines it did not score (:func:`training.distill.with_unscored`).

    Raises :class:`~training.metrics.TrainingDiverged` when even the best epoch gives every dev line one
    label (a diverged run), rather than hand back weights that would be saved as a checkpoint."""
    if model.config.text_head != "linear":
        raise ValueError("train_text_branch needs a model with text_head = 'linear'")
    if not 0.0 <= opts.distill_weight <= 1.0 or opts.distill_temperature <= 0:
        raise ValueError("distill_weight must lie in [0, 1] and distill_temperature be > 0")
    if opts.distill_weight > 0 and teacher is None:
        raise ValueError("distill_weight > 0 needs the teacher's logits")
    if teacher is not None and tuple(teacher.shape) != (2 * len(train), len(model.config.labels)):
        raise ValueError(f"teacher logits {tuple(teacher.shape)} do not match 2 x {len(train)} lines x "
                         f"{len(model.config.labels)} labels")  # fmt: skip
    random.seed(opts.seed)
    torch.manual_seed(opts.seed)
    model.to(device)
    loop = _TextLoop(model, train, opts, device, teacher)
    dev_texts = [tagged(str(e.text), t) for e, t in zip(dev, speaker_tags(dev), strict=True)]
    dev_labels = np.array([e.label for e in dev])
    dev_pasts = dialogue_pasts(dev, model.config.text_past_lines) if model.config.text_past_lines else None
    result = TextBranchResult()
    best: dict[str, torch.Tensor] | None = None
    best_label: str | None = None
    for epoch in range(1, opts.epochs + 1):
        losses = loop.epoch(epoch)
        metrics = evaluate_texts(model, dev_texts, dev_labels, device, opts.eval_batch_size, dev_pasts)
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan"),
               "dev_weighted_f1": metrics["weighted_f1"], "dev_macro_f1": metrics["macro_f1"],
               "seconds": round(time.monotonic() - loop.started, 1)}  # fmt: skip
        logger.info("epoch %d: loss %.4f dev weighted-F1 %.4f macro-F1 %.4f (%.0f s)", epoch, row["train_loss"],
                    row["dev_weighted_f1"], row["dev_macro_f1"], row["seconds"])  # fmt: skip
        result.history.append(row)
        if on_epoch:
            on_epoch(row, model)
        one_label = collapsed_to(metrics)
        if one_label:
            logger.warning("epoch %d gives every dev line %r: not learning yet, or diverged", epoch, one_label)
        if metrics["weighted_f1"] > result.best_dev_weighted_f1:
            result.best_dev_weighted_f1, result.best_epoch = metrics["weighted_f1"], epoch
            best, best_label = model.trained_state_dict(), one_label
    if best_label:
        raise TrainingDiverged(
            f"the text branch did not train: its best epoch ({result.best_epoch} of {opts.epochs}) gives every one "
            f"of the {len(dev)} dev lines {best_label!r} (dev weighted-F1 {result.best_dev_weighted_f1:.3f}); "
            "lower the learning rates (--lr-encoder, --lr-head) or try another --seed"
        )
    if best is not None:
        model.load_state_dict(best, strict=False)
    model.eval()
    result.seconds = time.monotonic() - loop.started
    return result
